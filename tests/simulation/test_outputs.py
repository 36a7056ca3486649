"""ExperimentOutputs: metrics.csv and TensorBoard agree after a resume (no round twice, re-run values win)."""

import collections
import glob
import os

import tensorflow as tf

from tff_fl.simulation import outputs as outputs_lib


def _tb_scalars(exp_dir, tag):
  """step -> list of values of `tag` over every event file in tb/."""
  found = collections.defaultdict(list)
  for path in glob.glob(os.path.join(exp_dir, 'tb', '*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          found[event.step].append(float(tf.make_ndarray(value.tensor)))
  return dict(found)


def test_resume_rewrites_tensorboard_from_the_kept_rows(tmp_path):
  first = outputs_lib.ExperimentOutputs(str(tmp_path))
  for r in (1, 2, 3, 4):  # The interrupted run got to round 4; its last checkpoint was round 2.
    first.add_row({'round': r, 'loss': float(r)})
  first.close()
  assert _tb_scalars(str(tmp_path), 'loss') == {1: [1.0], 2: [2.0], 3: [3.0], 4: [4.0]}

  resumed = outputs_lib.ExperimentOutputs(str(tmp_path))
  resumed.load_rows(2)
  resumed.rewrite_tensorboard()
  for r in (3, 4, 5):
    resumed.add_row({'round': r, 'loss': 10.0 * r})
  resumed.close()
  assert _tb_scalars(str(tmp_path), 'loss') == {1: [1.0], 2: [2.0], 3: [30.0], 4: [40.0], 5: [50.0]}
  with open(tmp_path / 'metrics.csv') as f:
    assert [line.split(',')[0] for line in f.read().splitlines()] == ['round', '1', '2', '3', '4', '5']
