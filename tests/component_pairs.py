"""The pair matrix of the binary's components: a representative flag set per flag group and what a pair must do.

`COMPONENTS` is one representative setting per flag group (every algorithm included); a pair is two of them whose
flags differ (two values of one flag cannot be given together). The contract (issue 14) for every pair: exit 0, or
exit 2 with one line `error: ...` naming a flag of each; never a traceback; and every component that is on changes
the run (its metrics.csv differs from the run without it) unless declared result-neutral.

Used by tests/experiments/test_component_pairs.py (every pair validated before training, a covering set of training
runs, each component's effect) and experiments/pair_matrix.py (every accepted pair trained, the effect per pair).
"""

import collections
import contextlib
import csv
import dataclasses
import itertools
import json
import math
import os
import re
import traceback
from typing import Iterable, Optional, Sequence

import train_binary  # tests/train_binary.py

# digits (8x8 images, so --augment applies), the 2-layer MLP (FedPer keeps a head layer), 6 clients, 5 per round
# (robust statistics need several clients), 2 local epochs (FedProx's stragglers run a random number in [1, E)), 2 rounds (SCAFFOLD's and
# FedPer's first round equal FedAvg's).
BASE = ('--task=digits', '--model=2nn', '--num_clients=6', '--clients_per_round=5', '--client_batch_size=20',
        '--client_epochs_per_round=2', '--total_rounds=2', '--rounds_per_eval=2', '--rounds_per_checkpoint=2')

TRAINS, PERSONAL, MEASURES, NEUTRAL = 'trains', 'personal', 'measures', 'neutral'


@dataclasses.dataclass(frozen=True)
class Component:
  """A representative setting of one flag group.

  effect: TRAINS (metrics.csv values differ), PERSONAL (the global model is the baseline's by design; per-client
  models appear in clients.csv: Ditto), MEASURES (adds metrics.csv columns; training unchanged) or NEUTRAL (declared
  result-neutral: the same metrics up to float summation order, e.g. --workers). amplifies_rounding: the setting
  makes discrete choices on values (top-k coordinates, stochastic rounding, a median), so a float-rounding
  difference between two runs (e.g. of another slot layout) can change a choice and, from the next round on, the
  model: a neutral member paired with it is compared on the first round's training only.
  """
  name: str
  flags: tuple
  effect: str = TRAINS
  amplifies_rounding: bool = False

  @property
  def flag_names(self) -> frozenset:
    return frozenset(f.split('=')[0].lstrip('-') for f in self.flags)


C = Component
COMPONENTS = (
    # Algorithms (fedavg is the baseline every other setting is compared with).
    C('fedprox', ('--algorithm=fedprox', '--mu=0.1')),
    C('fedsgd', ('--algorithm=fedsgd',)),
    C('fednova', ('--algorithm=fednova',)),
    C('scaffold', ('--algorithm=scaffold',)),
    C('feddyn', ('--algorithm=feddyn',)),
    C('ditto', ('--algorithm=ditto',), PERSONAL),
    C('fedper', ('--algorithm=fedper',)),
    # A global step every round with example weights is FedAvg: the edges run two rounds on their own.
    C('hierarchical', ('--hierarchical', '--num_clusters=2', '--cluster_by=labels', '--global_every=2')),
    # Optimizers and weighting.
    C('client_momentum', ('--client_optimizer=momentum', '--client_momentum=0.5')),
    C('server_adam', ('--server_optimizer=adam', '--server_learning_rate=0.01')),
    # Aggregator chains (one flag: pairs among them are not expressible): clipping, compression and a robust
    # statistic in one chain; adaptive clipping (aggregator state); secure aggregation as a protocol. The robust
    # statistic is the median, which any cohort size allows: dropouts and availability shrink this task's 5-client
    # cohort below what Krum or a trimmed mean need (a one-line error at that round, tests/experiments/
    # test_aggregation_flags.py), a size limit rather than a composition.
    C('chain', ('--aggregator=clip(1.0)>topk(0.3)>quantize(8)>median',), amplifies_rounding=True),
    C('adaptive_clip', ('--aggregator=adaptive_clip(0.5)>mean',)),
    C('secagg', ('--aggregator=secagg(24,0.6)>mean',)),
    C('attack', ('--attack=sign_flip', '--byzantine_fraction=0.4')),
    # Privacy.
    C('dp', ('--dp=fixed', '--noise_multiplier=0.1')),
    C('sample_dp', ('--sample_dp', '--sample_noise_multiplier=0.5')),
    # Participation.
    C('dropout', ('--dropout_rate=0.3',)),
    C('stragglers', ('--straggler_fraction=0.5', '--straggler_policy=partial')),
    C('fedprox_stragglers', ('--straggler_model=fedprox', '--straggler_fraction=0.5', '--straggler_policy=partial')),
    C('availability', ('--availability=diurnal',)),
    # Client state, pruning, diagnostics, preprocessing, evaluation.
    C('topk_ef', ('--compression=topk_ef(0.3)',)),
    C('pruning', ('--pruning_schedule=constant', '--final_sparsity=0.5')),
    C('drift', ('--drift_metrics',), MEASURES),
    C('normalize', ('--client_preprocess=normalize(client)',)),
    C('augment', ('--augment=flip,brightness(0.2)',)),
    C('central_eval', ('--central_eval=test',), MEASURES),
    C('feature_noise', ('--feature_noise=0.5',)),
    # Execution.
    C('engine_tff', ('--engine=tff',), NEUTRAL),
    C('workers', ('--workers=local:2', '--engine_slots=2'), NEUTRAL),
)
BY_NAME = {c.name: c for c in COMPONENTS}
assert len(BY_NAME) == len(COMPONENTS)


def expressible(*components: Component) -> bool:
  """True if the components set distinct flags (two values of one flag cannot be given together)."""
  names = [n for c in components for n in c.flag_names]
  return len(names) == len(set(names))


def pairs(components: Sequence[Component] = COMPONENTS) -> list[tuple[Component, Component]]:
  return [(a, b) for a, b in itertools.combinations(components, 2) if expressible(a, b)]


def flags_of(components: Iterable[Component]) -> list[str]:
  return [f for c in components for f in c.flags]


def run_name(components: Sequence[Component]) -> str:
  return '+'.join(c.name for c in components) or 'baseline'


# --- The refusal contract ------------------------------------------------------------------------------------------

def error_line(stderr: str) -> Optional[str]:
  """The one `error: ...` line of a refused run, or None if stderr is not exactly that (tracebacks included)."""
  lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(('WARNING', 'W0', 'I0'))]
  if len(lines) == 1 and lines[0].startswith('error: '):
    return lines[0]
  return None


def names_flag_of(message: str, component: Component) -> bool:
  """True if `message` names one of the component's flags (`--name`, not as the prefix of a longer flag)."""
  return any(re.search(rf'--{re.escape(n)}(?![\w])', message) for n in component.flag_names)


def refusal_problem(result: train_binary.Result, components: Sequence[Component]) -> Optional[str]:
  """None if `result` is a clean refusal naming a flag of every component; else what is wrong."""
  if 'Traceback' in result.stderr or 'Traceback' in result.stdout:
    return 'traceback: ' + result.stderr[-2000:]
  line = error_line(result.stderr)
  if result.returncode != 2 or line is None:
    return f'exit {result.returncode}, not one error line: {result.stderr[-1500:]}'
  missing = [c.name for c in components if not names_flag_of(line, c)]
  if missing:
    return f'the error names no flag of {", ".join(missing)}: {line}'
  return None


# --- Running ---------------------------------------------------------------------------------------------------------

class Built(Exception):
  """Raised in place of building the round: the experiment was accepted up to the process build."""


@contextlib.contextmanager
def validation_only():
  """Within: `train_binary.run` validates the flags and configures every component, builds the algorithm and runs
  the process builders' own checks, then stops before tracing the round (raises `Built`). Workers are not started
  and the checks on the built process (`exp.process_checks`) are skipped."""
  from experiments import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from tff_fl import engine  # pylint: disable=g-import-not-at-top
  from tff_fl.algorithms import stock  # pylint: disable=g-import-not-at-top
  from tff_fl.simulation import multi_worker  # pylint: disable=g-import-not-at-top

  def stop(algorithm, *args, **kwargs):
    del args, kwargs
    algorithm.validate()
    raise Built()

  real_build = experiment_lib.Experiment.build_process

  def build_process(self):
    self.process_checks = []  # They inspect the built process.
    return real_build(self)

  patches = [(engine, 'build_task_process', stop), (stock, 'build_learning_process', stop),
             (multi_worker, 'set_worker_context', lambda *a, **k: (lambda: None)),
             (experiment_lib.Experiment, 'build_process', build_process)]
  originals = [getattr(obj, attr) for obj, attr, _ in patches]
  for obj, attr, value in patches:
    setattr(obj, attr, value)
  try:
    yield
  finally:
    for (obj, attr, _), original in zip(patches, originals):
      setattr(obj, attr, original)


def _run(components: Sequence[Component], out_dir: str) -> train_binary.Result:
  """The binary in this process; an exception escaping `main` becomes exit -1 with its traceback in stderr."""
  try:
    return train_binary.run(*BASE, *flags_of(components), f'--root_output_dir={out_dir}',
                            f'--experiment_name={run_name(components)}')
  except Built:
    raise
  except Exception:  # pylint: disable=broad-except
    return train_binary.Result(-1, '', traceback.format_exc())


def validate(components: Sequence[Component], out_dir: str) -> Optional[train_binary.Result]:
  """None if the binary accepts the components up to the process build; else the refused (or crashed) run."""
  with validation_only():
    try:
      return _run(components, out_dir)
    except Built:
      return None


def train(components: Sequence[Component], out_dir: str) -> train_binary.Result:
  return _run(components, out_dir)


def crashed(result: train_binary.Result) -> bool:
  return result.returncode not in (0, 2) or 'Traceback' in result.stderr + result.stdout


# --- Effects ---------------------------------------------------------------------------------------------------------

def outputs(out_dir: str, components: Sequence[Component]) -> dict:
  """What a finished run released: metrics.csv rows, clients.csv rows (if any) and summary.json, without wall times,
  paths and hparams."""
  path = os.path.join(out_dir, run_name(components))
  with open(os.path.join(path, 'metrics.csv')) as f:
    rows = [{k: v for k, v in row.items() if not k.endswith('seconds')} for row in csv.DictReader(f)]
  clients = None
  if os.path.exists(os.path.join(path, 'clients.csv')):
    with open(os.path.join(path, 'clients.csv')) as f:
      clients = list(csv.DictReader(f))
  with open(os.path.join(path, 'summary.json')) as f:
    summary = {k: v for k, v in json.load(f).items() if k != 'hparams' and 'seconds' not in k}
  return {'metrics': rows, 'clients': clients, 'summary': summary}


def _numbers_close(u, v, rtol: float) -> bool:
  try:
    u, v = float(u), float(v)
  except (TypeError, ValueError):
    return u == v
  if u == v or (math.isnan(u) and math.isnan(v)):  # Equal infinities (e.g. an epsilon of inf) or both NaN.
    return True
  if not (math.isfinite(u) and math.isfinite(v)):
    return False
  return abs(u - v) <= rtol * max(1.0, abs(u), abs(v))


def close(a: dict, b: dict, rtol: float = 1e-4) -> bool:
  """Same metrics.csv rounds and columns, values equal up to float summation order (result-neutral)."""
  rows_a, rows_b = a['metrics'], b['metrics']
  if len(rows_a) != len(rows_b) or any(set(x) != set(y) for x, y in zip(rows_a, rows_b)):
    return False
  return all(_numbers_close(x[k], y[k], rtol) for x, y in zip(rows_a, rows_b) for k in x)


def effect_problem(component: Component, run: dict, without: dict, others: Sequence[Component] = ()
                   ) -> Optional[str]:
  """None if `run` (the component on) and `without` (the same run without it: `others` on) differ as the component
  declares."""
  rows, base = run['metrics'], without['metrics']
  common = [k for k in base[0] if k in rows[0]] if rows and base else []

  def trained_same(rtol):  # The common metrics.csv columns agree up to `rtol` (float summation order).
    return len(rows) == len(base) and all(_numbers_close(r[k], b[k], rtol) for r, b in zip(rows, base) for k in common)

  if component.effect == NEUTRAL:
    if any(o.amplifies_rounding for o in others):  # The first round's training, before any discrete choice.
      first = lambda r: {'metrics': [{k: v for k, v in r['metrics'][0].items() if k.startswith('client_work/train/')}]}
      return None if close(first(run), first(without)) else 'declared result-neutral, but round 1 training differs'
    return None if close(run, without) else 'declared result-neutral, but the metrics differ'
  if component.effect == MEASURES:  # May run the clients in another form (e.g. sequentially): float order only.
    if not trained_same(1e-4):
      return 'declared a measurement, but the training metrics changed'
    return None if set(rows[0]) - set(base[0]) else 'adds no metrics.csv column'
  if component.effect == PERSONAL:
    if run['clients'] == without['clients'] or not run['clients'] or 'accuracy_personal' not in run['clients'][0]:
      return 'declared personal models, but clients.csv has no new accuracy_personal'
    return None
  # A change must exceed float summation order (a setting that only moves the clients off the client axis does not).
  return 'accepted, but the run is the same as without it' if trained_same(1e-5) else None


# --- Refused by design, and the covering ---------------------------------------------------------------------------

def _refusals(reason: str, *pairs_: str) -> dict:
  return {frozenset(p.split('+')): reason for p in pairs_}


# Every refused pair (names joined by '+') with why; the test asserts the binary refuses exactly these before training.
REFUSED = {
    **_refusals('FedNova sends its step count through the aggregator with the update; a stage that changes values '
                'would change it too', 'fednova+chain', 'fednova+adaptive_clip', 'fednova+secagg', 'fednova+dp', 'fednova+topk_ef'),
    **_refusals("SCAFFOLD's gradient correction is a plain-SGD step", 'scaffold+client_momentum'),
    **_refusals('FedSGD takes no local step: a client optimizer has no effect', 'fedsgd+client_momentum'),
    **_refusals('--engine=tff runs the stock TFF process of a stateless algorithm without extensions',
                *[f'{n}+engine_tff' for n in ('scaffold', 'feddyn', 'ditto', 'fedper', 'hierarchical', 'secagg',
                                              'attack', 'sample_dp', 'topk_ef', 'pruning', 'drift', 'normalize',
                                              'augment', 'workers')]),
    **_refusals('--dp is the aggregator', 'chain+dp', 'adaptive_clip+dp', 'secagg+dp'),
    **_refusals("the algorithm's uploads are summed outside the DP aggregator (release audit)", 'scaffold+dp',
                'feddyn+dp'),
    **_refusals('the privacy plan owns the sampler its accounting assumes', 'dp+availability',
                'sample_dp+availability'),
    **_refusals("FedProx's straggler model has no dropouts", 'dropout+fedprox_stragglers'),
    **_refusals('clusters from label histograms are computed outside the DP mechanism (release audit)',
                'hierarchical+dp', 'hierarchical+sample_dp'),
    **_refusals('drift figures and per-client normalization statistics leave the clients outside the DP mechanism '
                '(release audit)', 'dp+drift', 'sample_dp+drift', 'dp+normalize', 'sample_dp+normalize'),
    **_refusals("Ditto adds only personal models, whose per-client accuracies are outside the DP mechanism (release "
                'audit)', 'ditto+dp', 'ditto+sample_dp'),
}
assert all(len(p) == 2 and p <= set(BY_NAME) for p in REFUSED), [sorted(p) for p in REFUSED if not p <= set(BY_NAME)]


def accepted_pairs() -> set:
  return {frozenset((a.name, b.name)) for a, b in pairs()} - set(REFUSED)


def covering_runs(accepted: set, components: Sequence[Component] = COMPONENTS) -> list[list[Component]]:
  """A greedy strength-2 covering: runs of mutually accepted, expressible components such that every pair in
  `accepted` (frozensets of two names) is in some run. Each run starts from the uncovered pair whose members have
  the most uncovered pairs left and adds the component covering the most new pairs until none does."""
  uncovered, runs = set(accepted), []
  while uncovered:
    degree = collections.Counter(n for p in uncovered for n in p)
    seed = max(sorted(sorted(p) for p in uncovered), key=lambda p: degree[p[0]] + degree[p[1]])
    run = [BY_NAME[n] for n in seed]
    while True:
      gains = []
      for c in components:
        if c in run or not expressible(*run, c) or any(frozenset((c.name, r.name)) not in accepted for r in run):
          continue
        gain = sum(frozenset((c.name, r.name)) in uncovered for r in run)
        if gain:
          gains.append((gain, degree[c.name], c.name))
      if not gains:
        break
      run.append(BY_NAME[max(gains)[2]])
    uncovered -= {frozenset((a.name, b.name)) for a, b in itertools.combinations(run, 2)}
    runs.append(run)
  return runs
