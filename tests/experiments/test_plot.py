"""experiments/plot.py renders headless PNGs from run directories (written here as the binary writes them)."""

import csv
import json

import matplotlib.image
import pytest

from experiments import plot


def _write_run(path, drift):
  path.mkdir()
  rows = [{'round': r, 'train_loss': 2.0 / r, 'eval_loss': '' if r % 2 else 1.5 / r,
           'eval_accuracy': '' if r % 2 else 0.1 * r} for r in range(1, 7)]
  if drift:
    for r in rows:
      r['drift/update_norm_mean'] = 0.5 * r['round']
  with open(path / 'metrics.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  (path / 'summary.json').write_text(json.dumps({'per_client_accuracy': {'a': 0.5, 'b': 0.9, 'c': 1.0}}))


def test_plots_are_valid_pngs(tmp_path):
  _write_run(tmp_path / 'run_a', drift=True)
  _write_run(tmp_path / 'run_b', drift=False)
  paths = plot.plot_runs([str(tmp_path / 'run_a'), str(tmp_path / 'run_b')], str(tmp_path / 'plots'))
  assert [p.rsplit('/', 1)[1] for p in paths] == ['metrics.png', 'drift.png', 'client_accuracy.png']
  for p in paths:
    image = matplotlib.image.imread(p)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01  # Something was drawn, not a blank canvas.
  rounds, accs = plot._series(plot.read_run(str(tmp_path / 'run_a'))[0], 'eval_accuracy')
  assert rounds == [2, 4, 6] and accs == pytest.approx([0.2, 0.4, 0.6])  # Only eval rounds are plotted.


def test_not_a_run_directory(tmp_path):
  with pytest.raises(ValueError, match='no metrics.csv'):
    plot.plot_runs([str(tmp_path)], str(tmp_path / 'plots'))
