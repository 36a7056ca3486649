"""Paper baseline reproductions through the binary's own machinery.

  python -m experiments.reproduce --suite=mcmahan2017|fedprox2020|shakespeare|niid_bench [--max_rounds=N] [--seeds=0,1,2]
      [--runs=SUBSTRING,...] [--work_dir=/tmp/tff_fl_reproduce] [--output_dir=experiments/results] [--report_only]

Each run is a flagfile in experiments/configs plus overrides: the flags are parsed exactly as
`python -m experiments.train --flagfile=...` would parse them, the experiment is built by the binary's
`build_experiment()` and trained by the one training loop (checkpoints under --work_dir, so re-running continues).
Runs with a target accuracy stop once it is reached. Then `<output_dir>/<suite>.md` (table: paper number, ours,
settings, seeds, rounds used, wall time) and PNG curves are written from every run and seed of the suite found in
--work_dir (also those of earlier invocations), and `<output_dir>/reproductions.md` is reassembled from the suites'
markdown files.
"""

import dataclasses
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

from experiments import reproduce_report
from experiments import train as train_binary
from tff_fl.simulation import contexts
from tff_fl.simulation import outputs as outputs_lib
from tff_fl.simulation import training_loop

FLAGS = flags.FLAGS
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
REPORT_NAME = 'reproductions.md'


@dataclasses.dataclass(frozen=True)
class Run:
  """One configuration of a suite: a flagfile plus overrides ((flag, value) pairs)."""
  name: str
  flagfile: str
  label: str
  overrides: tuple = ()
  metric: str = 'central_test_accuracy'
  target: Optional[float] = None  # Stop once the running max of `metric` reaches it.
  paper: str = ''
  paper_rounds: Optional[float] = None
  group: str = ''
  stragglers: float = 0.0
  iid: bool = False  # fedprox2020: the homogeneous dataset (the paper's claims differ there).


@dataclasses.dataclass(frozen=True)
class Suite:
  name: str
  title: str
  runs: tuple
  seeds: tuple
  section: str  # A key of reproduce_report.SECTIONS.
  notes: str = ''


@dataclasses.dataclass
class RunResult:
  run: Run
  seed: int
  rows: list
  rounds_used: int
  wall_seconds: float
  settings: str


def _config(name: str) -> str:
  return os.path.join(CONFIG_DIR, f'{name}.flags')


def _mcmahan() -> Suite:
  runs = []
  for model, target, e in (('2nn', 0.97, 1), ('cnn', 0.99, 5)):
    for split, paper in (('iid', {'2nn': 87, 'cnn': 20}[model]), ('noniid', {'2nn': 664, 'cnn': 229}[model])):
      name = f'mcmahan2017_{model}_{split}'
      runs.append(Run(name, _config(name), f'{model.upper()} {"IID" if split == "iid" else "non-IID"} E={e} B=10',
                      target=target, paper=f'{paper} rounds to {target:.0%}', paper_rounds=paper))
  return Suite('mcmahan2017', 'McMahan et al. 2017 (FedAvg on MNIST): rounds to target test accuracy', tuple(runs),
               (0,), 'rounds_to_target',
               'Test accuracy on the official 10k MNIST test set after every round; rounds to target by the '
               "paper's method (running max, linear interpolation). Each run stops once the target is reached.")


LR_SWEEP = (0.02, 0.05, 0.2)


def _mcmahan_lr() -> Suite:
  """The 2NN rows of `mcmahan2017` at other client learning rates (that suite uses 0.1), on the packed engine."""
  runs = []
  for split, paper in (('iid', 87), ('noniid', 664)):
    for lr in LR_SWEEP:
      runs.append(Run(f'mcmahan2017_2nn_{split}_lr{lr:g}', _config(f'mcmahan2017_2nn_{split}'),
                      f'2NN {"IID" if split == "iid" else "non-IID"} E=1 B=10 lr={lr:g}',
                      overrides=(('client_learning_rate', lr), ('engine', 'packed')), target=0.97,
                      paper=f'{paper} rounds to 97%', paper_rounds=paper))
  return Suite('mcmahan2017_lr', 'McMahan et al. 2017, 2NN: rounds to 97% at other client learning rates',
               tuple(runs), (0,), 'rounds_to_target',
               'Same runs as the 2NN rows of `mcmahan2017` (client lr 0.1) at client learning rates '
               f"{', '.join(f'{lr:g}' for lr in LR_SWEEP)}, with `--engine=packed` (same results as the stock engine up "
               'to float summation order). The paper reports the best rate of its grid for each row.')


def _fedprox() -> Suite:
  runs = []
  for data, title in (('iid', 'Synthetic-IID'), ('0_0', 'Synthetic(0,0)'), ('05_05', 'Synthetic(0.5,0.5)'),
                      ('1_1', 'Synthetic(1,1)')):
    for level in (0.0, 0.5, 0.9):
      for label, algo in (('FedAvg', (('algorithm', 'fedavg'), ('straggler_policy', 'drop'))),
                          ('FedProx mu=1', (('algorithm', 'fedprox'), ('mu', 1.0), ('straggler_policy', 'partial')))):
        name = f'fedprox2020_{data}_s{int(level * 100)}_{"fedprox" if "Prox" in label else "fedavg"}'
        runs.append(Run(name, _config(f'fedprox2020_synthetic_{data}'), label,
                        overrides=algo + (('straggler_fraction', level),), metric='central_train_loss',
                        paper='orderings of Fig. 1', group=title, stragglers=level, iid=data == 'iid'))
  return Suite('fedprox2020', 'Li et al. 2020 (FedProx) on Synthetic data: FedAvg vs FedProx mu=1 with stragglers',
               tuple(runs), (0, 1, 2), 'fedprox',
               'Train loss = loss of the server model on all devices\' training data (central_train_loss), averaged '
               'over the last half of the evaluated rounds (the last value alone swings with FedAvg\'s oscillations); '
               'test accuracy = eval_accuracy over all devices\' 10% held-out data after the last round; accuracy '
               'instability = std of test accuracy over the last half of the evaluated rounds (lower = more stable). '
               'Paper claims: mu=1 lowers the train loss on the heterogeneous datasets and slows Synthetic-IID; at '
               '90% stragglers FedProx beats FedAvg in final accuracy and stability; "paper\'s claim holds" counts '
               'the seeds (the same data seed for both algorithms) in which it does.')


def _shakespeare() -> Suite:
  run = Run('shakespeare_fedavg', _config('shakespeare_fedavg'), 'FedAvg, char LSTM, 10 clients/round, E=1, B=4',
            paper='56.9% after 1200 rounds (Reddi et al. 2021)', paper_rounds=1200)
  return Suite('shakespeare', 'Shakespeare next-character prediction (FedAvg, TFF baseline LSTM)', (run,), (0,),
               'final_accuracy',
               'Accuracy excludes pad tokens (TFF baseline masking), measured on a fixed 2000-sequence sample of the '
               'role test split (central_test_accuracy); eval_accuracy is over all test sequences and counts pads.')


NIID_BENCH_DATASETS = (('mnist', 'MNIST'), ('fashion_mnist', 'FMNIST'))
NIID_BENCH_PARTITIONS = (  # (short name, label, overrides): NIID-Bench's partition flags and ours.
    ('iid', 'IID (homo)', (('partition', 'iid'),)),
    ('dir05', 'Dir(0.5) labels', (('partition', 'label_dirichlet'), ('dirichlet_alpha', 0.5))),
    ('c1', '#C=1', (('partition', 'label_quantity'), ('labels_per_client', 1))),
    ('c2', '#C=2', (('partition', 'label_quantity'), ('labels_per_client', 2))),
    ('c3', '#C=3', (('partition', 'label_quantity'), ('labels_per_client', 3))),
    ('qty05', 'quantity Dir(0.5)', (('partition', 'quantity_skew'), ('dirichlet_alpha', 0.5))),
    ('noise01', 'feature noise 0.1', (('partition', 'iid'), ('feature_noise', 0.1))),
)
NIID_BENCH_MU = 0.01  # FedProx: NIID-Bench tunes mu in {0.001, 0.01, 0.1, 1}; 0.01 is its README's example value.
NIID_BENCH_ALGORITHMS = (
    ('fedavg', 'FedAvg', (('algorithm', 'fedavg'),)),
    ('fedprox', f'FedProx mu={NIID_BENCH_MU:g}', (('algorithm', 'fedprox'), ('mu', NIID_BENCH_MU))),
    ('scaffold', 'SCAFFOLD', (('algorithm', 'scaffold'), ('scaffold_correction', 'after_step'))),
    ('fednova', 'FedNova', (('algorithm', 'fednova'),)),
)
# The minimum set of issue 16, first in the suite's order: MNIST x Dir(0.5) and FMNIST x #C=2, four algorithms.
NIID_BENCH_FIRST = (('mnist', 'dir05'), ('fashion_mnist', 'c2'))


def _niid_bench() -> Suite:
  runs = []
  cells = [(d, p) for d, _ in NIID_BENCH_DATASETS for p, _, _ in NIID_BENCH_PARTITIONS]
  cells = list(NIID_BENCH_FIRST) + [c for c in cells if c not in NIID_BENCH_FIRST]
  data_label, part = dict(NIID_BENCH_DATASETS), {p: (label, o) for p, label, o in NIID_BENCH_PARTITIONS}
  for dataset, p in cells:
    for algo, label, overrides in NIID_BENCH_ALGORITHMS:
      runs.append(Run(f'niid_bench_{dataset}_{p}_{algo}', _config('niid_bench'), label,
                      overrides=(('task', dataset),) + part[p][1] + overrides,
                      group=f'{data_label[dataset]} {part[p][0]}', paper_rounds=50))
  return Suite('niid_bench', 'NIID-Bench (Li et al., ICDE 2022): FedAvg, FedProx, SCAFFOLD, FedNova on non-IID '
               'MNIST / FMNIST', tuple(runs), (0, 1, 2), 'niid_bench',
               'NIID-Bench\'s setting (experiments/configs/niid_bench.flags): 10 parties, all every round, 50 rounds, '
               '10 local epochs, batch 64, SGD lr 0.01, momentum 0.9, weight decay 1e-5, SimpleCNNMNIST, '
               f'data-size-weighted averaging; FedProx mu={NIID_BENCH_MU:g}; SCAFFOLD with NIID-Bench\'s correction '
               'after each momentum step (`--scaffold_correction=after_step`); FedNova with a_i for momentum 0.9. '
               'Test accuracy = the global model on the official 10k test set (clean, also in the noise setting) '
               'after every round (central_test_accuracy). Best round = max over the rounds run; final = last round '
               'run. Runs that have not reached 50 rounds are marked partial: their numbers are at the rounds shown, '
               'not comparable with the paper\'s 50.\n\n'
               'Where we differ from NIID-Bench\'s code, or it is ambiguous (details in the module docstrings of '
               '`tff_fl/data/partition.py`, `feature_noise.py`, `models/keras_models.py`, `algorithms/fednova.py`, '
               '`scaffold.py`): (1) draws come from numpy Generators seeded by --seed, not NIID-Bench\'s global '
               'np.random / random / torch seeds, so partitions and initial weights have the same distributions but '
               'not the same values; (2) a client\'s E epochs are E seeded permutations batched as one stream, so a '
               'batch may span an epoch boundary: ceil(E n / 64) steps per round instead of NIID-Bench\'s '
               'E ceil(n / 64) (FedNova\'s tau and SCAFFOLD\'s step count are those steps); (3) feature noise is '
               'drawn once per training example (NIID-Bench redraws it every time an example is loaded) and the '
               'test set stays clean (NIID-Bench tests on every party\'s noisy copy of it); (4) the redraw loops of '
               'the Dirichlet partitions stop after 100 draws with an error; (5) FedProx uses mu=0.01 for every '
               'cell (NIID-Bench reports the best of {0.001, 0.01, 0.1, 1}); (6) SimpleCNNMNIST flattens NHWC '
               'instead of NCHW, a fixed permutation of its first dense layer.')


SUITES = {'mcmahan2017': _mcmahan, 'mcmahan2017_lr': _mcmahan_lr, 'fedprox2020': _fedprox,
          'shakespeare': _shakespeare, 'niid_bench': _niid_bench}


class TargetStop(training_loop.RoundHook):
  """Stops before the round after `column`'s running max reached `target`; the max is checkpointed."""
  name = 'target_stop'

  def __init__(self, column: str, target: float):
    self.column, self.target, self.best = column, target, -np.inf

  def after_round(self, round_num, output, row) -> None:
    if isinstance(row.get(self.column), (int, float)):
      self.best = max(self.best, row[self.column])

  def stop_before(self, round_num: int) -> Optional[str]:
    return f'{self.column} reached {self.target}' if self.best >= self.target else None

  def checkpoint_arrays(self):
    return {'best': np.array(self.best, np.float64)}

  def restore_arrays(self, arrays) -> None:
    if 'best' in arrays:
      self.best = float(arrays['best'])


def parse_run_flags(run: Run, seed: int, work_dir: str, max_rounds: Optional[int] = None) -> list[str]:
  """Parses the binary's flags for (run, seed) into FLAGS, as `experiments.train` would; returns the argv used."""
  argv = ['train', f'--flagfile={run.flagfile}'] + [f'--{k}={v}' for k, v in run.overrides]
  argv += [f'--seed={seed}', f'--root_output_dir={work_dir}', f'--experiment_name={run.name}_seed{seed}']
  FLAGS.unparse_flags()
  FLAGS(argv)
  if max_rounds is not None and FLAGS.total_rounds > max_rounds:
    argv.append(f'--total_rounds={max_rounds}')
    FLAGS(argv)
  return argv


def _finished(exp_dir: str, total_rounds: int) -> bool:
  """True if the run already reached `total_rounds` or stopped early (target reached)."""
  path = os.path.join(exp_dir, 'summary.json')
  if not os.path.exists(path):
    return False
  with open(path) as f:
    summary = json.load(f)
  return summary['rounds_completed'] >= total_rounds or summary['stop_reason'] != 'completed'


def _settings(hp: dict[str, Any]) -> str:
  clients = (f"{hp['clients_per_round']} clients/round" if hp['partition'] == 'natural' and hp['task'] != 'synthetic'
             else f"{hp['clients_per_round']} of {hp['num_clients']} clients")
  parts = [f"{hp['task']}/{hp['model']}", clients,
           f"E={hp['client_epochs_per_round']}", f"B={hp['client_batch_size']}",
           f"client lr {hp['client_learning_rate']:g}", hp['algorithm'] + (f" mu={hp['mu']:g}" if hp['mu'] else '')]
  if hp['task'] in ('mnist', 'fashion_mnist'):
    parts.append(hp['partition'])
  if hp.get('client_weight_decay'):
    parts.append(f"momentum {hp['client_momentum']:g}, wd {hp['client_weight_decay']:g}")
  if hp.get('straggler_fraction'):
    parts.append(f"{hp['straggler_fraction']:.0%} stragglers ({hp['straggler_policy']})")
  return ', '.join(parts)


def run_one(run: Run, seed: int, work_dir: str, max_rounds: Optional[int] = None, log=print) -> RunResult:
  """Parses the run's flags like the binary and trains it (resuming its checkpoint; skipped if already finished)."""
  argv = parse_run_flags(run, seed, work_dir, max_rounds)
  exp_dir = os.path.join(work_dir, f'{run.name}_seed{seed}')
  if _finished(exp_dir, FLAGS.total_rounds):
    log(f'== {run.name} seed {seed}: already finished in {exp_dir}')
    return load_result(run, seed, work_dir)
  start = time.time()
  exp = train_binary.build_experiment()
  if run.target is not None:
    exp.hooks.append(TargetStop(run.metric, run.target))
  log(f'== {run.name} seed {seed}: {" ".join(argv[1:])}')
  train_binary.train(exp, log=lambda line: log(f'  {line}'))
  previous = _wall_seconds(exp_dir)
  with open(os.path.join(exp_dir, 'reproduce_time.json'), 'w') as f:
    json.dump({'wall_seconds': (0.0 if np.isnan(previous) else previous) + time.time() - start}, f)
  return load_result(run, seed, work_dir)


def _wall_seconds(exp_dir: str) -> float:
  """Wall time of all reproduce invocations of a run (task loading, tracing, training, evaluation); NaN if unknown."""
  path = os.path.join(exp_dir, 'reproduce_time.json')
  if not os.path.exists(path):
    return float('nan')
  with open(path) as f:
    return float(json.load(f)['wall_seconds'])


def load_result(run: Run, seed: int, work_dir: str) -> Optional[RunResult]:
  """The run's recorded result in `work_dir`, or None if it never ran."""
  exp_dir = os.path.join(work_dir, f'{run.name}_seed{seed}')
  if not os.path.exists(os.path.join(exp_dir, 'metrics.csv')):
    return None
  outputs = outputs_lib.ExperimentOutputs(exp_dir)
  outputs.load_rows(sys.maxsize)
  with open(os.path.join(exp_dir, 'hparams.json')) as f:
    hparams = json.load(f)
  wall = _wall_seconds(exp_dir)
  rounds = max((int(r['round']) for r in outputs.rows), default=0)
  return RunResult(run, seed, outputs.rows, rounds, wall, _settings(hparams))


def select_runs(suite: Suite, patterns: Sequence[str]) -> list[Run]:
  runs = [r for r in suite.runs if not patterns or any(p in r.name for p in patterns)]
  if not runs:
    raise ValueError(f"--runs matched no run of --suite={suite.name}; runs: {', '.join(r.name for r in suite.runs)}")
  return runs


def recorded_seeds(run: Run, work_dir: str) -> list[int]:
  """Seeds of `run` that have an experiment directory in `work_dir`, ascending."""
  prefix = f'{run.name}_seed'
  names = os.listdir(work_dir) if os.path.isdir(work_dir) else []
  return sorted(int(n[len(prefix):]) for n in names if n.startswith(prefix) and n[len(prefix):].isdigit())


def write_report(suite: Suite, work_dir: str, output_dir: str) -> str:
  """Writes `<output_dir>/<suite>.md` (+ PNGs) from every recorded (run, seed) of the suite in `work_dir`, and
  reassembles REPORT_NAME from the suites' markdown files."""
  results = [res for run in suite.runs for seed in recorded_seeds(run, work_dir)
             if (res := load_result(run, seed, work_dir)) is not None]
  os.makedirs(output_dir, exist_ok=True)
  body = reproduce_report.SECTIONS[suite.section](suite, results, output_dir) if results else 'No run recorded yet.\n'
  total = sum(r.wall_seconds for r in results if np.isfinite(r.wall_seconds))
  missing = [run.name for run in suite.runs if not recorded_seeds(run, work_dir)]
  not_run = f"Not run yet: {', '.join(missing)}.\n\n" if missing else ''
  text = (f'## {suite.title}\n\n{suite.notes}\n\nSuite `{suite.name}`: {len(results)} run(s), total wall time '
          f'{total / 60:.1f} min on this machine (`python -m experiments.reproduce --suite={suite.name}`).\n\n'
          f'{not_run}{body}')
  path = os.path.join(output_dir, f'{suite.name}.md')
  with open(path, 'w') as f:
    f.write(text)
  parts = ['# Paper baseline reproductions\n\nNumbers measured by `experiments/reproduce.py`; each section states '
           'the rounds and seeds actually run. Wall times include task loading, tracing and evaluation, measured on '
           'the machine that ran them.\n']
  for name in SUITES:
    suite_md = os.path.join(output_dir, f'{name}.md')
    if os.path.exists(suite_md):
      parts.append(open(suite_md).read())
  with open(os.path.join(output_dir, REPORT_NAME), 'w') as f:
    f.write('\n'.join(parts))
  return path


def run_suite(suite: Suite, work_dir: str, output_dir: str, seeds: Optional[Sequence[int]] = None,
              max_rounds: Optional[int] = None, patterns: Sequence[str] = (), log=print, train: bool = True) -> str:
  """Trains the selected runs for each seed (unless `train` is False), then writes the suite's report."""
  seeds = tuple(seeds) if seeds else suite.seeds
  for run in select_runs(suite, patterns) if train else ():
    for seed in seeds:
      run_one(run, seed, work_dir, max_rounds, log)
  return write_report(suite, work_dir, output_dir)


def main(argv):
  del argv
  suite_name, seeds_text, max_rounds = FLAGS.suite, FLAGS.seeds, FLAGS.max_rounds
  work_dir, output_dir, patterns = FLAGS.work_dir, FLAGS.output_dir, [p for p in FLAGS.runs.split(',') if p]
  train = not FLAGS.report_only  # Captured now: training re-parses FLAGS for each run.
  try:
    if suite_name not in SUITES:
      raise ValueError(f"--suite must be one of {', '.join(SUITES)}; got '{suite_name}'.")
    try:
      seeds = [int(s) for s in seeds_text.split(',') if s.strip()]
    except ValueError:
      raise ValueError(f"--seeds must be comma-separated integers; got '{seeds_text}'.") from None
    if max_rounds is not None and max_rounds < 1:
      raise ValueError(f'--max_rounds must be >= 1; got {max_rounds}.')
    path = run_suite(SUITES[suite_name](), os.path.join(work_dir, suite_name), output_dir, seeds, max_rounds,
                     patterns, log=lambda line: print(line, flush=True), train=train)
    print(f'Wrote {path} and {os.path.join(output_dir, REPORT_NAME)}')
  except ValueError as e:
    sys.stderr.write(f'error: {e}\n')
    sys.exit(2)
  finally:
    contexts.shutdown()


if __name__ == '__main__':
  flags.DEFINE_string('suite', 'mcmahan2017', f"suite to run: {', '.join(SUITES)}")
  flags.DEFINE_string('seeds', '', "comma-separated seeds; '' = the suite's default")
  flags.DEFINE_integer('max_rounds', None, "cap on each run's --total_rounds")
  flags.DEFINE_string('runs', '', 'comma-separated substrings; run only the suite runs whose name contains one')
  flags.DEFINE_string('work_dir', '/tmp/tff_fl_reproduce', 'root of the runs\' experiment directories (checkpoints)')
  flags.DEFINE_string('output_dir', 'experiments/results', 'where the markdown tables and PNGs go')
  flags.DEFINE_bool('report_only', False, 'only rewrite the report from the runs recorded in --work_dir')
  contexts.set_local_cpp_context()  # Before flag parsing: even a usage error exits on this context.
  app.run(main)
