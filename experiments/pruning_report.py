"""Accuracy vs final sparsity of federated magnitude pruning on digits, from real runs of the binary.

  .venv/bin/python -m experiments.pruning_report [--rounds=50] [--sparsities=0,0.5,0.8,0.9] [--seeds=0]
      [--out=experiments/results/pruning.md]

Every run is `experiments.train` with the default config (digits, 2NN, 20 Dirichlet(0.5) clients, 10 per round,
FedAvg, client SGD 0.1) plus `--pruning_schedule=polynomial --initial_sparsity=0 --final_sparsity=S` (tfmot
PolynomialDecay, begin round 10% of --rounds, end round 70%, every 5% of the rounds), so the dense row (S=0) goes
through the same code path. Reported: eval accuracy and per-client p10 of the released model, the measured sparsity
of the exported (strip_pruning) model, and the raw / gzip size of its weights. Every number is measured here.
"""

import argparse
import os
import tempfile

from experiments import binary_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(out_dir: str, name: str, rounds: int, sparsity: float, seed: int) -> dict:
  begin, end = max(1, rounds // 10), max(2, (7 * rounds) // 10)
  frequency = max(1, rounds // 20)
  cmd = ['--flagfile=experiments/configs/default.flags', f'--total_rounds={rounds}',
         f'--rounds_per_eval={rounds}', f'--rounds_per_checkpoint={rounds}', f'--seed={seed}',
         '--pruning_schedule=polynomial', '--initial_sparsity=0', f'--final_sparsity={sparsity}',
         f'--pruning_begin_round={begin}', f'--pruning_end_round={end}', f'--pruning_frequency={frequency}']
  summary = binary_runs.run_binary(out_dir, name, cmd)
  summary['schedule'] = f'polynomial 0 -> {sparsity:g}, rounds {begin}..{end} every {frequency}'
  return summary


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=50)
  parser.add_argument('--sparsities', default='0,0.5,0.8,0.9')
  parser.add_argument('--seeds', default='0')
  parser.add_argument('--out', default=os.path.join(REPO, 'experiments', 'results', 'pruning.md'))
  args = parser.parse_args()
  sparsities = [float(s) for s in args.sparsities.split(',')]
  seeds = [int(s) for s in args.seeds.split(',')]
  rows = []
  with tempfile.TemporaryDirectory() as out_dir:
    for s in sparsities:
      results = [run(out_dir, f's{s:g}_seed{seed}', args.rounds, s, seed) for seed in seeds]
      rows.append((s, results))
      accs = ', '.join(f"{r['eval_accuracy']:.4f}" for r in results)
      print(f'final sparsity {s:g}: eval accuracy {accs}', flush=True)
  dense_acc = sum(r['eval_accuracy'] for r in rows[0][1]) / len(rows[0][1])
  lines = [
      '# Federated magnitude pruning: accuracy vs final sparsity (digits, 2NN)',
      '',
      f'Produced by `.venv/bin/python -m experiments.pruning_report --rounds={args.rounds} '
      f'--sparsities={args.sparsities} --seeds={args.seeds}`. Default config (`experiments/configs/default.flags`: '
      '20 Dirichlet(0.5) clients, 10 per round, FedAvg, client SGD 0.1, batch 10, 1 epoch) with a tfmot '
      f'PolynomialDecay schedule ({rows[0][1][0]["schedule"].split(", ", 1)[1]}). Sparsity is over the prunable '
      'weights (Dense kernels; biases are not pruned, as in tfmot). Sizes are of the exported weights '
      '(float32, dense storage) and their gzip compression; the SavedModel is written with `strip_pruning`.',
      '',
      '| target final sparsity | measured sparsity | eval accuracy (mean over seeds) | vs dense | client acc. p10 '
      '| weights KB | gzip KB | gzip ratio | wall s |',
      '|---|---|---|---|---|---|---|---|---|',
  ]
  for s, results in rows:
    mean = lambda key: sum(r[key] for r in results) / len(results)  # pylint: disable=cell-var-from-loop
    per_seed = ', '.join(f"{r['eval_accuracy']:.4f}" for r in results)
    lines.append(
        f"| {s:.0%} | {mean('pruned_measured_sparsity'):.3f} | {mean('eval_accuracy'):.4f} "
        f"({per_seed}) | {mean('eval_accuracy') - dense_acc:+.4f} | "
        f"{mean('client_accuracy_p10'):.3f} | {mean('pruned_weights_bytes') / 1024:.1f} | "
        f"{mean('pruned_weights_gzip_bytes') / 1024:.1f} | "
        f"{mean('pruned_weights_bytes') / mean('pruned_weights_gzip_bytes'):.2f}x | {mean('wall_seconds'):.0f} |")
  binary_runs.write_report(args.out, lines)


if __name__ == '__main__':
  main()
