"""Privacy-utility trade-off of client-level DP-FedAvg on digits, from real runs of the binary.

  .venv/bin/python -m experiments.privacy_report [--rounds=50] [--noise_multipliers=0.5,1,2]
      [--adaptive_noise_multiplier=1] [--target_epsilon=4] [--jobs=2] [--out=experiments/results/privacy.md]

Every run is `experiments.train` on digits (logreg, 300 IID clients, Poisson client sampling at rate 30/300,
uniform client weighting, client SGD 0.5, batch 10, one local epoch, server SGD 1.0), with:
no DP; `--dp=fixed` (clip 1.0) at each noise multiplier; `--dp=adaptive` (clip starts at 1.0, target unclipped
quantile 0.5); and one `--dp=fixed --target_epsilon` run that the budget stops early. Epsilon is the binary's
dp-accounting RDP value at delta 1e-5 (summary.json); accuracies are of the released (final) model. The DP noise
is keyed by --seed (tff_fl/aggregators/seeded_queries.py), so a row repeats exactly; every number is measured here.
"""

import argparse
import concurrent.futures
import os
import tempfile

from experiments.reproduce_report import markdown_table
from experiments import binary_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DELTA = 1e-5
BASE_FLAGS = ('--task=digits', '--model=logreg', '--num_clients=300', '--partition=iid', '--clients_per_round=30',
              '--client_sampling=poisson', '--client_weighting=uniform', '--client_learning_rate=0.5',
              '--client_batch_size=10', '--client_epochs_per_round=1', '--server_learning_rate=1.0',
              f'--target_delta={DELTA:g}', '--seed=0')


def command(rounds: int, extra: tuple[str, ...]) -> list[str]:
  """The binary's command line for one run (output flags excluded)."""
  return ['.venv/bin/python', '-m', 'experiments.train', *BASE_FLAGS, f'--total_rounds={rounds}',
          f'--rounds_per_eval={rounds}', f'--rounds_per_checkpoint={rounds}', *extra]


def run(out_dir: str, name: str, cmd: list[str]) -> dict:
  """Runs the binary; returns its summary.json plus the metrics.csv rows and the wall time."""
  return binary_runs.run_binary(out_dir, name, cmd[3:])


def final_clip(rows: list[dict]) -> str:
  """Last clip norm the DP aggregator reported (adaptive clipping moves it), or '-'."""
  cols = [c for c in (rows[0] if rows else {}) if c.startswith('aggregator') and 'clip' in c]
  return f'{float(rows[-1][cols[0]]):.3f}' if cols else '-'


def _fmt_eps(eps) -> str:
  return 'inf (no DP)' if eps is None else f'{eps:.3f}'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=50)
  parser.add_argument('--noise_multipliers', default='0.5,1,2')
  parser.add_argument('--adaptive_noise_multiplier', type=float, default=1.0)
  parser.add_argument('--target_epsilon', type=float, default=4.0)
  parser.add_argument('--jobs', type=int, default=2, help='binary runs at a time')
  parser.add_argument('--out', default=os.path.join(REPO, 'experiments', 'results', 'privacy.md'))
  args = parser.parse_args()
  zs = [float(z) for z in args.noise_multipliers.split(',')]
  runs = [('no DP', '-', ())]
  runs += [(f'fixed z={z:g}', f'{z:g}', ('--dp=fixed', f'--noise_multiplier={z:g}', '--clip_norm=1.0')) for z in zs]
  za = args.adaptive_noise_multiplier
  runs.append((f'adaptive z={za:g}', f'{za:g}', ('--dp=adaptive', f'--noise_multiplier={za:g}', '--clip_norm=1.0',
                                                  '--target_unclipped_quantile=0.5')))
  runs.append((f'fixed z=1, budget eps<={args.target_epsilon:g}', '1',
               ('--dp=fixed', '--noise_multiplier=1', '--clip_norm=1.0', f'--target_epsilon={args.target_epsilon:g}')))
  commands = [command(args.rounds, extra) for _, _, extra in runs]
  with tempfile.TemporaryDirectory() as out_dir, concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
    results = list(pool.map(lambda i: run(out_dir, f'run{i}', commands[i]), range(len(runs))))
  table = []
  for (label, z, _), r in zip(runs, results):
    # Under --dp the run suppresses per-client evaluation and, with Poisson sampling, the cohort sizes
    # (summary.json privacy.released): those cells are '-'.
    cohorts = [int(row['clients']) for row in r['rows'] if row.get('clients') not in (None, '')]
    p10 = r.get('client_accuracy_p10')
    table.append([label, z, _fmt_eps(r['epsilon']), f"{r['eval_accuracy']:.4f}", '-' if p10 is None else f'{p10:.3f}',
                  f"{r['client_accuracy_mean']:.3f}", r['rounds_completed'],
                  f'{sum(cohorts) / len(cohorts):.1f}' if cohorts else '-',
                  final_clip(r['rows']), f"{r['train_seconds_this_run']:.0f}", f"{r['wall_seconds']:.0f}"])
    print(' | '.join(str(c) for c in table[-1]), flush=True)
  budget = results[-1]
  stop_line = next((line for line in budget['stdout'].splitlines() if line.startswith('Stopping before round')), '-')
  lines = [
      '# Client-level DP-FedAvg: privacy vs utility (digits, logreg)',
      '',
      f'Produced by `.venv/bin/python -m experiments.privacy_report --rounds={args.rounds} '
      f'--noise_multipliers={args.noise_multipliers} --adaptive_noise_multiplier={za:g} '
      f'--target_epsilon={args.target_epsilon:g}` (one run each, seed 0; the DP noise is keyed by the seed). '
      f'Setting: 300 IID clients, Poisson client sampling with rate q = 30/300 = 0.1, uniform client weighting, '
      f'client SGD 0.5, batch 10, 1 local epoch, server SGD 1.0, {args.rounds} rounds. Epsilon: client-level, '
      f'dp-accounting RDP accountant for `PoissonSampledDpEvent(q, GaussianDpEvent(z))` composed over the rounds '
      f'run, at delta = {DELTA:g}. Eval accuracy is over all clients\' held-out examples of the released model; the '
      'per-client columns are over the 300 clients (each holds only ~1 to 2 eval examples, so p10 is coarse); '
      'DP runs do not release per-client accuracy or, with Poisson sampling, the cohort size (summary.json '
      'privacy.released), so those cells are - for them. '
      'The adaptive row\'s z is the total noise multiplier (value + clipped-count noise) and its clip column is '
      'the last clip norm the aggregator reported. Seconds: training loop (`train_seconds_this_run`) and whole '
      f'process, with {args.jobs} runs at a time on a shared 2-core machine.',
      '',
      markdown_table(['run', 'noise multiplier z', f'epsilon (delta={DELTA:g})', 'eval accuracy', 'client acc. p10',
                      'client acc. mean', 'rounds', 'mean cohort', 'final clip', 'train s', 'wall s'], table),
      '',
      f'Budget run: `--target_epsilon={args.target_epsilon:g}` with z=1 stopped after '
      f"{budget['rounds_completed']} of {args.rounds} rounds (summary.json: privacy_budget_exhausted="
      f"{budget['privacy_budget_exhausted']}, rounds_within_budget={budget.get('rounds_within_budget')}). "
      f'Its log line:',
      '',
      f'    {stop_line}',
      '',
      'Commands (each also gets `--root_output_dir=... --experiment_name=...`):',
      '',
  ]
  lines += [f'    {" ".join(cmd)}' for cmd in commands]
  binary_runs.write_report(args.out, lines)


if __name__ == '__main__':
  main()
