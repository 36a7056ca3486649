"""Drift diagnostics on the engine vs numpy: update norms and cosines to the aggregate (with a sign-flip attacker
pulling against the others), client gradients and losses of logistic regression at the broadcast model; measuring
leaves training untouched; the warning names the figure that stands out."""

import collections
import logging

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import attacks
from tff_fl.algorithms import drift
from tff_fl.algorithms import fed_avg
from tff_fl.simulation import drift_hook

from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py

BATCH, LR = 7, 0.1


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(num_clients=6, model='logreg', partition='dirichlet', dirichlet_alpha=0.3))


def _weights():
  rng = np.random.default_rng(2)
  return [rng.normal(size=(64, 10)).astype(np.float32) * 0.3, rng.normal(size=10).astype(np.float32)]


def _numpy_sgd_update(x, y, w, b):
  """initial - final [W, b] (flattened) of local SGD over batches of BATCH in order."""
  w1, b1 = w.astype(np.float64), b.astype(np.float64)
  for lo in range(0, len(y), BATCH):
    _, gw, gb = logreg_loss_and_grads(w1, b1, x[lo:lo + BATCH], y[lo:lo + BATCH])
    w1, b1 = w1 - LR * gw, b1 - LR * gb
  return np.concatenate([(w - w1).ravel(), b - b1])


def _process(task, extensions, client_axis=None):
  order_fn = lambda cid, r: task.train_order(cid, epochs=1, seed=0, round_num=r)
  p = engine.build_process(fed_avg.FedAvg(), task.model_fn, task.data.train, order_fn, batch_size=BATCH,
                           client_optimizer=tff.learning.optimizers.build_sgdm(LR), extensions=extensions,
                           num_slots=2, client_axis=client_axis)
  return p, p.set_model_weights(p.initialize(), tff.learning.models.ModelWeights(_weights(), []))


def test_drift_figures_match_numpy_and_training_is_untouched(task):
  attack = lambda: attacks.ByzantineAttack('sign_flip', 0.5, seed=0)  # Two of 4 clients send -update.
  p, state = _process(task, [attack(), drift.DriftMeasurements()])
  cohort = task.client_ids[:4]
  out = p.next(state, engine.Cohort.full(1, cohort))

  w, b = _weights()
  bad = attacks.choose_byzantine(cohort, 0.5, 0, 1)
  losses, grads, sent, sizes = [], [], [], []
  for cid in cohort:
    x, y = task.data.train[cid]
    loss, gw, gb = logreg_loss_and_grads(w, b, x, y)
    losses.append(loss)
    grads.append(np.concatenate([gw.ravel(), gb]))
    order = task.train_order(cid, epochs=1, seed=0, round_num=1)
    u = _numpy_sgd_update(x[order], y[order], w, b)
    sent.append(-u if cid in bad else u)
    sizes.append(len(y))
  losses, grads, sent, sizes = map(np.array, (losses, grads, sent, sizes))
  aggregate = (sent * sizes[:, None]).sum(0) / sizes.sum()  # Example-weighted mean (NUM_EXAMPLES).
  norms = np.linalg.norm(sent, axis=1)
  cos = sent @ aggregate / (norms * np.linalg.norm(aggregate))
  assert cos.min() < 0 < cos.max()  # One client pulls against the aggregate.
  m = out.metrics['drift']
  assert list(m) == list(drift.FIGURES)
  np.testing.assert_allclose([m['update_norm_mean'], m['update_norm_max'], m['aggregate_norm'], m['cosine_mean'],
                              m['cosine_min']],
                             [norms.mean(), norms.max(), np.linalg.norm(aggregate), cos.mean(), cos.min()], rtol=1e-4)
  np.testing.assert_allclose(m['gradient_dissimilarity'], np.mean(np.sum((grads - grads.mean(0)) ** 2, axis=1)),
                             rtol=1e-4)
  np.testing.assert_allclose(m['gradient_norm_sq_mean'], np.mean(np.sum(grads ** 2, axis=1)), rtol=1e-4)
  np.testing.assert_allclose([m['loss_mean'], m['loss_std'], m['loss_min'], m['loss_max']],
                             [losses.mean(), losses.std(), losses.min(), losses.max()], rtol=1e-4)

  # The extension only measures: training and the model's training metrics are those without it, bit for bit
  # (clients on the client axis in both; the measurements' gradients at the broadcast are a call of their own).
  assert p.client_execution == 'client axis'
  plain, plain_state = _process(task, [attack()])
  ref = plain.next(plain_state, engine.Cohort.full(1, cohort))
  assert out.metrics['client_work'] == ref.metrics['client_work']
  for a, c in zip(p.get_model_weights(out.state).trainable, plain.get_model_weights(ref.state).trainable):
    np.testing.assert_array_equal(a, c)
  assert [c['loss'] for c in out.client_metrics] == [c['loss'] for c in ref.client_metrics]
  # A round nobody reported to: every figure NaN (no crash in the aggregate pass).
  empty = p.next(state, engine.Cohort(2, (), sampled=tuple(cohort))).metrics['drift']
  assert list(empty) == list(drift.FIGURES) and all(np.isnan(v) for v in empty.values())


def _row(loss, **figures):
  row = collections.OrderedDict(train_loss=loss)
  base = dict(gradient_dissimilarity=1.0, loss_std=0.2, update_norm_mean=1.0, update_norm_max=1.5, aggregate_norm=0.8,
              cosine_mean=0.7, cosine_min=0.4)
  base.update(figures)
  row.update((f'drift/{k}', v) for k, v in base.items())
  return row


@pytest.mark.parametrize('spike, cause', [
    (dict(gradient_dissimilarity=6.0), 'high client dissimilarity (gradient dissimilarity 6, 6.0x its median'),
    (dict(update_norm_max=9.0), 'large client update norms (max 9, 6.0x its median'),
    (dict(cosine_mean=-0.3, cosine_min=-0.9), 'clients pulling in different directions (mean cosine to the aggregate '
                                              '-0.30, min -0.90)'),
    (dict(), 'no drift figure stands out'),
])
def test_loss_increase_warning_names_likely_cause(spike, cause, caplog):
  hook = drift_hook.DriftHook(warning_threshold=0.1)
  rows = [_row(2.0), _row(1.8), _row(1.7), _row(1.95, **spike), _row(1.9)]
  with caplog.at_level(logging.WARNING):
    for r, row in enumerate(rows, start=1):
      hook.after_round(r, None, row)
  assert 'drift/loss_change' not in rows[0]
  assert rows[3]['drift/loss_change'] == pytest.approx(0.25)
  assert len(hook.warnings) == 1 and hook.warnings[0].startswith('round 4: train loss rose by 0.25')
  assert cause in hook.warnings[0] and hook.warnings[0] in caplog.text
  assert hook.summary() == {'drift_warnings': 1}
  with pytest.raises(ValueError, match='warning_threshold must be >= 0'):
    drift_hook.DriftHook(-1.0)
