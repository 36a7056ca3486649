"""Drift diagnostics vs numpy: update norms/cosines from known client updates, client gradients of logistic
regression, loss spread; the warning names the figure that stands out."""

import collections
import logging

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_fl import tasks
from tff_fl.algorithms import drift
from tff_fl.algorithms import fed_avg

from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py


def test_aggregator_measurements_match_numpy():
  value_type = tff.StructWithPythonType([tff.TensorType(np.float32, [2, 2]), tff.TensorType(np.float32, [3])], list)
  process = drift.DriftMeasurementFactory(tff.aggregators.MeanFactory()).create(value_type, tff.TensorType(np.float32))
  rng = np.random.default_rng(0)
  updates = [[rng.normal(size=(2, 2)).astype(np.float32), rng.normal(size=3).astype(np.float32)] for _ in range(4)]
  updates[3] = [-u for u in updates[0]]  # One client pulls against another.
  weights = np.array([1.0, 2.0, 3.0, 0.5], np.float32)
  out = process.next(process.initialize(), updates, list(weights))
  flat = np.stack([np.concatenate([u[0].ravel(), u[1]]) for u in updates])
  agg = (flat * weights[:, None]).sum(0) / weights.sum()
  np.testing.assert_allclose(np.concatenate([np.ravel(out.result[0]), out.result[1]]), agg, rtol=1e-5)
  norms = np.linalg.norm(flat, axis=1)
  cos = flat @ agg / (norms * np.linalg.norm(agg))
  m = out.measurements['drift']
  assert set(out.measurements) == {'mean_value', 'mean_weight', 'drift'}  # Inner measurements keep their paths.
  np.testing.assert_allclose([m['update_norm_mean'], m['update_norm_max'], m['aggregate_norm'], m['cosine_mean'],
                              m['cosine_min']],
                             [norms.mean(), norms.max(), np.linalg.norm(agg), cos.mean(), cos.min()], rtol=1e-5)


def _numpy_logreg(x, y, w, b):
  """Mean cross-entropy loss and its gradient (dW, db) for logits = x w + b."""
  loss, gw, gb = logreg_loss_and_grads(w, b, x, y)
  return loss, np.concatenate([gw.ravel(), gb])


def test_client_gradient_dissimilarity_and_loss_spread_match_numpy():
  task = tasks.build_task(tasks.TaskConfig(num_clients=6, model='logreg', partition='dirichlet', dirichlet_alpha=0.3))
  base = fed_avg.build_fed_avg(task.model_fn, tff.learning.optimizers.build_sgdm(0.1))
  process = drift.with_client_gradients(base, task.model_fn)
  rng = np.random.default_rng(2)
  w, b = rng.normal(size=(64, 10)).astype(np.float32) * 0.3, rng.normal(size=10).astype(np.float32)
  weights = tff.learning.models.ModelWeights(trainable=[w, b], non_trainable=[])
  state = process.set_model_weights(process.initialize(), weights)
  cohort = task.client_ids[:4]
  data = [task.train_dataset(c, epochs=1, batch_size=7, seed=0, round_num=1) for c in cohort]
  out = process.next(state, data)
  ref = [_numpy_logreg(*task.data.train[c], w, b) for c in cohort]
  losses = np.array([r[0] for r in ref])
  grads = np.stack([r[1] for r in ref])
  m = out.metrics['drift']
  np.testing.assert_allclose(m['gradient_dissimilarity'], np.mean(np.sum((grads - grads.mean(0)) ** 2, axis=1)),
                             rtol=1e-4)
  np.testing.assert_allclose(m['gradient_norm_sq_mean'], np.mean(np.sum(grads ** 2, axis=1)), rtol=1e-4)
  np.testing.assert_allclose([m['loss_mean'], m['loss_std'], m['loss_min'], m['loss_max']],
                             [losses.mean(), losses.std(), losses.min(), losses.max()], rtol=1e-4)
  # The wrapper only measures: training is the unwrapped process's, bit for bit.
  plain = base.next(base.set_model_weights(base.initialize(), weights), data)
  assert out.metrics['client_work'] == plain.metrics['client_work']
  for a, c in zip(process.get_model_weights(out.state).trainable, base.get_model_weights(plain.state).trainable):
    np.testing.assert_array_equal(a, c)


def _row(loss, **figures):
  row = collections.OrderedDict(train_loss=loss)
  base = dict(gradient_dissimilarity=1.0, loss_std=0.2)
  agg = dict(update_norm_mean=1.0, update_norm_max=1.5, aggregate_norm=0.8, cosine_mean=0.7, cosine_min=0.4)
  for k, v in {**base, **figures}.items():
    if k in agg or k in base:
      (agg if k in agg else base)[k] = v
  row.update((f'drift/{k}', v) for k, v in base.items())
  row.update((f'aggregator/drift/{k}', v) for k, v in agg.items())
  return row


@pytest.mark.parametrize('spike, cause', [
    (dict(gradient_dissimilarity=6.0), 'high client dissimilarity (gradient dissimilarity 6, 6.0x its median'),
    (dict(update_norm_max=9.0), 'large client update norms (max 9, 6.0x its median'),
    (dict(cosine_mean=-0.3, cosine_min=-0.9), 'clients pulling in different directions (mean cosine to the aggregate '
                                              '-0.30, min -0.90)'),
    (dict(), 'no drift figure stands out'),
])
def test_loss_increase_warning_names_likely_cause(spike, cause, caplog):
  hook = drift.DriftHook(warning_threshold=0.1)
  rows = [_row(2.0), _row(1.8), _row(1.7), _row(1.95, **spike), _row(1.9)]
  with caplog.at_level(logging.WARNING):
    for r, row in enumerate(rows, start=1):
      hook.after_round(r, None, row)
  assert 'drift/loss_change' not in rows[0]
  assert rows[3]['drift/loss_change'] == pytest.approx(0.25)
  assert len(hook.warnings) == 1 and hook.warnings[0].startswith('round 4: train loss rose by 0.25')
  assert cause in hook.warnings[0] and hook.warnings[0] in caplog.text
  assert hook.summary() == {'drift_warnings': 1}
  with pytest.raises(ValueError, match='--drift_warning_threshold must be >= 0'):
    drift.DriftHook(-1.0)
