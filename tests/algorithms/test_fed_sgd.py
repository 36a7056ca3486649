"""FedSGD: the definition on the engine and its stock export vs stock TFF `build_fed_sgd`, and vs numpy gradients."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl.algorithms import fed_sgd

from logreg_clients import BATCH, MODEL_FN, NUM_EXAMPLES, SIZES, UNIFORM, arrays as _arrays  # tests/
from logreg_clients import datasets as _datasets, initial_weights as _initial_weights, sgd as _sgd
from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py

def _run_stock(process, arrays, rounds=3):
  state = process.set_model_weights(process.initialize(), _initial_weights())
  for _ in range(rounds):
    state = process.next(state, _datasets(arrays)).state
  return [np.asarray(w) for w in process.get_model_weights(state).trainable]


def _engine(arrays, server_optimizer=None, weighting=NUM_EXAMPLES, **kwargs):
  data = {str(i): a for i, a in enumerate(arrays)}
  return engine.build_process(fed_sgd.FedSGD(), MODEL_FN, data, lambda cid, r: np.arange(len(data[cid][0])),
                              batch_size=BATCH, client_optimizer=_sgd(0.5), server_optimizer=server_optimizer,
                              client_weighting=weighting, **kwargs)


def _run_engine(process, ids, rounds=3):
  state = process.set_model_weights(process.initialize(), _initial_weights())
  for r in range(1, rounds + 1):
    out = process.next(state, engine.Cohort.full(r, ids))
    state = out.state
  return [np.asarray(w) for w in process.get_model_weights(state).trainable], out


def _max_diff(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def test_stock_export_matches_stock_tff_with_its_default_server_sgd():
  arrays = _arrays()
  ours = _run_stock(fed_sgd.build_fed_sgd(MODEL_FN), arrays)
  stock = _run_stock(tff.learning.algorithms.build_fed_sgd(MODEL_FN), arrays)
  assert fed_sgd.FedSGD().default_server_learning_rate() == 0.1  # TFF's default server SGD.
  assert _max_diff(ours, stock) < 1e-6
  assert _max_diff(ours, _initial_weights().trainable) > 1e-3


@pytest.mark.parametrize('aggregator', [None, tff.aggregators.clipping_factory(0.05, tff.aggregators.MeanFactory())])
def test_engine_matches_stock_tff(aggregator):
  arrays = _arrays(1)
  ours, out = _run_engine(_engine(arrays, _sgd(0.5), model_aggregator=aggregator, num_slots=2), ['0', '1', '2'])
  stock = _run_stock(tff.learning.algorithms.build_fed_sgd(MODEL_FN, server_optimizer_fn=_sgd(0.5),
                                                           model_aggregator=aggregator), arrays)
  assert _max_diff(ours, stock) < 1e-6
  assert [m['num_examples'] for m in out.client_metrics] == list(SIZES)


def test_one_round_is_one_gradient_step_of_numpy_full_batch_gradients():
  """No local steps: each client's update is its mean gradient over all its batches at the broadcast model."""
  arrays, lr = _arrays(2), 0.5
  w0, b0 = (w.astype(np.float64) for w in _initial_weights().trainable)
  ours, out = _run_engine(_engine(arrays, _sgd(lr), UNIFORM), ['0', '1', '2'], rounds=1)
  grads = [logreg_loss_and_grads(w0, b0, x, y) for x, y in arrays]
  want = [w0 - lr * np.mean([g[1] for g in grads], axis=0), b0 - lr * np.mean([g[2] for g in grads], axis=0)]
  assert _max_diff(ours, want) < 1e-5
  np.testing.assert_allclose([m['loss'] for m in out.client_metrics], [g[0] for g in grads], rtol=1e-5)


def test_non_finite_client_gets_weight_zero():
  arrays = _arrays(3)
  bad = (np.full_like(arrays[0][0], np.nan), arrays[0][1])
  process = _engine(arrays + [bad], _sgd(0.5))
  with_bad, _ = _run_engine(process, ['0', '1', '2', '3'], rounds=1)
  without, _ = _run_engine(process, ['0', '1', '2'], rounds=1)
  assert _max_diff(with_bad, without) < 1e-6
  assert all(np.all(np.isfinite(w)) for w in with_bad)
