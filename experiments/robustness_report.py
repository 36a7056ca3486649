"""Byzantine robustness of the aggregators on digits, from real runs of the binary.

  .venv/bin/python -m experiments.robustness_report [--rounds=50] [--seeds=0] [--attack_scale=10] [--beta=0.2]
      [--jobs=2] [--out=experiments/results/robustness.md]

Every run is `experiments.train` with the shared flags in `BASE_FLAGS` (digits, multinomial logistic regression,
40 Dirichlet(1.0) clients, 10 sampled per round, FedAvg with client SGD 0.1, batch 10, 5 epochs, server SGD 1.0)
plus `--aggregator=A` and, for attacked rows, `--byzantine_fraction=0.2 --attack=X`: 2 of the 10 sampled clients
are malicious every round. Rows: clean FedAvg; FedAvg under sign flip; each robust aggregator under sign flip; mean
and median under the scaled, gaussian_noise and label_flip attacks. Reported per row (mean over seeds): final eval
accuracy of the released model, per-client accuracy p10, rounds run, the first evaluated round (every 5) at which
eval accuracy reached 80%, the difference to clean FedAvg, and the aggregator's measurements from metrics.csv
averaged over rounds. Every number is measured here; `--attack_scale=1` gives the plain (unamplified) sign flip.
"""

import argparse
import concurrent.futures
import os
import shlex
import tempfile

from experiments import binary_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_FLAGS = ('--task=digits', '--model=logreg', '--num_clients=40', '--partition=dirichlet', '--dirichlet_alpha=1.0',
              '--algorithm=fedavg', '--clients_per_round=10', '--client_epochs_per_round=5',
              '--client_batch_size=10', '--client_optimizer=sgd', '--client_learning_rate=0.1',
              '--server_optimizer=sgd', '--server_learning_rate=1.0', '--rounds_per_eval=5')
BYZANTINE_FRACTION = 0.2
TARGET_ACCURACY = 0.8
# Aggregator-measurement columns of metrics.csv worth a summary (mean over rounds), by suffix.
MEASUREMENTS = ('trimmed_count', 'clipped_count', 'selected_indices/0', 'selected_scores/0')


def rows_to_run(beta: float) -> list[tuple[str, str]]:
  """(aggregator spec, attack) pairs: the table's rows, clean FedAvg first."""
  robust = [f'trimmed_mean({beta:g})', 'median', 'krum(2)', 'multi_krum(2,5)', f'clip(1.0)>trimmed_mean({beta:g})']
  rows = [('mean', 'none'), ('mean', 'sign_flip')] + [(a, 'sign_flip') for a in robust]
  return rows + [(a, attack) for attack in ('scaled', 'gaussian_noise', 'label_flip') for a in ('mean', 'median')]


def run_flags(aggregator: str, attack: str, rounds: int, seed: int, attack_scale: float) -> list[str]:
  """The per-run flags on top of BASE_FLAGS."""
  flags = [f'--aggregator={aggregator}', f'--total_rounds={rounds}', f'--rounds_per_checkpoint={rounds}',
           f'--seed={seed}']
  if attack != 'none':
    flags += [f'--byzantine_fraction={BYZANTINE_FRACTION}', f'--attack={attack}']
    if attack in ('sign_flip', 'scaled'):
      flags.append(f'--attack_scale={attack_scale:g}')
  return flags


def run_binary(out_dir: str, name: str, flags: list[str]) -> dict:
  """Runs `experiments.train` with BASE_FLAGS + flags; returns summary.json plus the metrics.csv rows."""
  return binary_runs.run_binary(out_dir, name, [*BASE_FLAGS, *flags])


def rounds_to_target(rows: list[dict]) -> int | None:
  for r in rows:
    if r.get('eval_accuracy') and float(r['eval_accuracy']) >= TARGET_ACCURACY:
      return int(r['round'])
  return None


def measurement_summary(rows: list[dict]) -> str:
  """'name=mean over rounds' for the aggregator measurement columns present (see MEASUREMENTS)."""
  parts = []
  for column in rows[0]:
    if column.startswith('aggregator/') and column.endswith(MEASUREMENTS):
      values = [float(r[column]) for r in rows if r[column] not in ('', None)]
      if values:
        parts.append(f'{column[len("aggregator/"):]}={sum(values) / len(values):.2f}')
  return ', '.join(parts) or '-'


def _mean(values):
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=50)
  parser.add_argument('--seeds', default='0')
  parser.add_argument('--attack_scale', type=float, default=10.0)
  parser.add_argument('--beta', type=float, default=0.2, help='trimmed-mean beta')
  parser.add_argument('--jobs', type=int, default=2, help='runs in parallel')
  parser.add_argument('--out', default=os.path.join(REPO, 'experiments', 'results', 'robustness.md'))
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  pairs = rows_to_run(args.beta)
  with tempfile.TemporaryDirectory() as out_dir, concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
    futures = {(a, x, s): pool.submit(run_binary, out_dir, f'r{i}_s{s}',
                                      run_flags(a, x, args.rounds, s, args.attack_scale))
               for i, (a, x) in enumerate(pairs) for s in seeds}
    results = {}
    for (a, x, s), future in futures.items():
      results.setdefault((a, x), []).append(future.result())
      print(f'{a:32s} {x:15s} seed {s}: eval accuracy {results[(a, x)][-1]["eval_accuracy"]:.4f}', flush=True)

  clean = _mean([r['eval_accuracy'] for r in results[pairs[0]]])
  command = '.venv/bin/python -m experiments.train $BASE --root_output_dir=OUT --experiment_name=NAME '
  lines = [
      '# Byzantine robustness of the aggregators (digits, logistic regression)',
      '',
      f'Produced by `.venv/bin/python -m experiments.robustness_report --rounds={args.rounds} --seeds={args.seeds} '
      f'--attack_scale={args.attack_scale:g} --beta={args.beta:g}`. Setting: 40 Dirichlet(1.0) clients, 10 sampled '
      f'per round, FedAvg (client SGD 0.1, batch 10, 5 local epochs; server SGD 1.0), {args.rounds} rounds. In attacked '
      f'rows {BYZANTINE_FRACTION:.0%} of each round\'s cohort (2 of 10) is malicious: sign_flip sends '
      f'-{args.attack_scale:g} x its update, scaled sends {args.attack_scale:g} x its update, gaussian_noise adds '
      'N(0, 1) per coordinate, label_flip trains on y -> 9 - y. Robust aggregators give every client one vote; '
      '`mean` weights by example count. Accuracy is the released model on all clients\' held-out data; p10 is the '
      f'10th percentile of per-client accuracy; "rounds to {TARGET_ACCURACY:.0%}" is the first evaluated round '
      '(every 5) at or above it. Aggregator measurements are metrics.csv columns averaged over rounds. '
      f'Means over seeds {args.seeds}.',
      '',
      f'| aggregator | attack | eval accuracy (per seed) | vs clean FedAvg | client acc. p10 | rounds | '
      f'rounds to {TARGET_ACCURACY:.0%} | aggregator measurements (mean/round) | wall s |',
      '|---|---|---|---|---|---|---|---|---|',
  ]
  for a, x in pairs:
    rs = results[(a, x)]
    acc = _mean([r['eval_accuracy'] for r in rs])
    to_target = [rounds_to_target(r['rows']) for r in rs]
    reached = ', '.join('-' if t is None else str(t) for t in to_target)
    per_seed = ', '.join(f"{r['eval_accuracy']:.4f}" for r in rs)
    lines.append(
        f"| `{a}` | {x} | {acc:.4f} ({per_seed}) | "
        f"{100 * (acc - clean):+.1f} pts | {_mean([r['client_accuracy_p10'] for r in rs]):.3f} | "
        f"{_mean([r['rounds_completed'] for r in rs]):.0f} | {reached} | {measurement_summary(rs[0]['rows'])} | "
        f"{_mean([r['wall_seconds'] for r in rs]):.0f} |")
  lines += ['', 'Exact commands (one per row and seed; OUT and NAME are arbitrary):', '', '```',
            f"BASE='{' '.join(BASE_FLAGS)}'"]
  for a, x in pairs:
    for s in seeds:
      lines.append(command + ' '.join(shlex.quote(f) for f in run_flags(a, x, args.rounds, s, args.attack_scale)))
  lines.append('```')
  binary_runs.write_report(args.out, lines)


if __name__ == '__main__':
  main()
