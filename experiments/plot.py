"""Plots of one or more run directories: accuracy/loss vs round, drift metrics vs round, per-client accuracy.

  python -m experiments.plot <run_dir> [<run_dir> ...] [--out=DIR]

Reads each run's metrics.csv and summary.json (as written by `experiments.train`) and writes `metrics.png`
(train loss, eval loss and eval accuracy vs round, one line per run), `drift.png` (every `drift/...` column vs round,
if any run has them) and `client_accuracy.png` (histogram of the final per-client accuracy of each run).
"""

import argparse
import csv
import json
import os
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


def read_run(run_dir: str) -> tuple[list[dict], dict]:
  metrics_path = os.path.join(run_dir, 'metrics.csv')
  if not os.path.isfile(metrics_path):
    raise ValueError(f'{run_dir} has no metrics.csv; pass a directory written by experiments.train.')
  with open(metrics_path) as f:
    rows = list(csv.DictReader(f))
  summary_path = os.path.join(run_dir, 'summary.json')
  summary = json.load(open(summary_path)) if os.path.isfile(summary_path) else {}
  return rows, summary


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
  pts = [(int(r['round']), float(r[key])) for r in rows if r.get(key) not in (None, '')]
  return [p[0] for p in pts], [p[1] for p in pts]


def plot_runs(run_dirs: Sequence[str], out_dir: str) -> list[str]:
  """Writes the PNGs into `out_dir`; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  runs = [(os.path.basename(os.path.normpath(d)), *read_run(d)) for d in run_dirs]
  written = []
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for name, rows, _ in runs:
    for ax, key in zip(axes, ('train_loss', 'eval_loss', 'eval_accuracy')):
      ax.plot(*_series(rows, key), marker='.', label=name)
      ax.set_title(key)
      ax.set_xlabel('round')
  axes[0].legend()
  written.append(_save(fig, out_dir, 'metrics.png'))

  drift_keys = sorted({k for _, rows, _ in runs for r in rows for k in r if k.startswith('drift/')})
  if drift_keys:
    fig, axes = plt.subplots(1, len(drift_keys), figsize=(4 * len(drift_keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], drift_keys):
      for name, rows, _ in runs:
        ax.plot(*_series(rows, key), label=name)
      ax.set_title(key, fontsize=8)
      ax.set_xlabel('round')
    axes[0][0].legend()
    written.append(_save(fig, out_dir, 'drift.png'))

  fig, ax = plt.subplots(figsize=(6, 4))
  for name, _, summary in runs:
    accs = list(summary.get('per_client_accuracy', {}).values())
    if accs:
      ax.hist(accs, bins=20, range=(0, 1), alpha=0.5, label=name)
  ax.set_xlabel('final per-client accuracy')
  ax.set_ylabel('clients')
  ax.legend()
  written.append(_save(fig, out_dir, 'client_accuracy.png'))
  return written


def _save(fig, out_dir: str, name: str) -> str:
  path = os.path.join(out_dir, name)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('run_dirs', nargs='+')
  parser.add_argument('--out', default=None, help='output directory (default: the first run directory)')
  args = parser.parse_args()
  try:
    for path in plot_runs(args.run_dirs, args.out or args.run_dirs[0]):
      print(path)
  except ValueError as e:
    raise SystemExit(f'error: {e}') from None


if __name__ == '__main__':
  main()
