"""FedAvg / FedProx / FedOpt from tff_fl against stock TFF and a numpy FedProx reference."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import fed_avg
from tff_fl.models import keras_models

from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py

SPEC = collections.OrderedDict(x=tf.TensorSpec([6], tf.float32), y=tf.TensorSpec([], tf.int32))
SIZES = (7, 12, 20)


def _keras():
  return keras_models.logreg([6], 3)


MODEL_FN = keras_models.build_tff_model_fn(_keras, SPEC)


def _client_arrays(seed=0):
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)) for n in SIZES]


def _datasets(arrays, batch=5):
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(batch) for x, y in arrays]


def _initial_weights():
  tf.keras.utils.set_random_seed(1)
  m = _keras()
  return tff.learning.models.ModelWeights(trainable=[v.numpy() for v in m.trainable_weights], non_trainable=[])


def _run(process, rounds=3, data=None):
  data = data or _datasets(_client_arrays())
  state = process.set_model_weights(process.initialize(), _initial_weights())
  for _ in range(rounds):
    state = process.next(state, data).state
  return [np.asarray(w) for w in process.get_model_weights(state).trainable]


def _max_diff(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def _sgd(lr=0.1):
  return tff.learning.optimizers.build_sgdm(learning_rate=lr)


@pytest.mark.parametrize('weighting,stock_builder', [
    (tff.learning.ClientWeighting.NUM_EXAMPLES, 'weighted'),
    (tff.learning.ClientWeighting.UNIFORM, 'unweighted'),
])
def test_fed_avg_matches_stock_tff(weighting, stock_builder):
  ours = _run(fed_avg.build_fed_avg(MODEL_FN, _sgd(), client_weighting=weighting))
  if stock_builder == 'weighted':
    stock = tff.learning.algorithms.build_weighted_fed_avg(MODEL_FN, _sgd())
  else:
    stock = tff.learning.algorithms.build_unweighted_fed_avg(MODEL_FN, _sgd())
  assert _max_diff(ours, _run(stock)) < 1e-5
  assert _max_diff(ours, _initial_weights().trainable) > 1e-2  # Training moved the model.


def test_fed_opt_adam_server_matches_stock_tff():
  adam = lambda: tff.learning.optimizers.build_adam(learning_rate=0.05, beta_2=0.99, epsilon=1e-3)
  ours = _run(fed_avg.build_fed_avg(MODEL_FN, _sgd(), adam()))
  stock = _run(tff.learning.algorithms.build_weighted_fed_avg(MODEL_FN, _sgd(), adam()))
  assert _max_diff(ours, stock) < 1e-5


def test_stock_aggregator_factories_plug_in():
  weighted = _run(fed_avg.build_fed_avg(MODEL_FN, _sgd(), model_aggregator=tff.aggregators.MeanFactory()))
  default = _run(fed_avg.build_fed_avg(MODEL_FN, _sgd()))
  assert _max_diff(weighted, default) < 1e-7
  # An unweighted stock factory is accepted and equals uniform weighting.
  unweighted = _run(fed_avg.build_fed_avg(MODEL_FN, _sgd(), model_aggregator=tff.aggregators.UnweightedMeanFactory()))
  uniform = _run(fed_avg.build_fed_avg(MODEL_FN, _sgd(), client_weighting=tff.learning.ClientWeighting.UNIFORM))
  assert _max_diff(unweighted, uniform) < 1e-6
  with pytest.raises(TypeError, match='model_aggregator'):
    fed_avg.build_fed_avg(MODEL_FN, _sgd(), model_aggregator=object())


def test_fed_prox_mu_zero_equals_fed_avg():
  assert _max_diff(_run(fed_avg.build_fed_prox(MODEL_FN, _sgd(), proximal_mu=0.0)),
                   _run(fed_avg.build_fed_avg(MODEL_FN, _sgd()))) == 0.0


def _numpy_fedprox(w0, b0, arrays, mu, lr, rounds, batch):
  """FedProx on multinomial logistic regression in numpy: per-batch SGD on mean CE + (mu/2)||w - w_round||^2."""
  w, b = w0.astype(np.float64), b0.astype(np.float64)
  for _ in range(rounds):
    deltas, weights = [], []
    for x, y in arrays:
      cw, cb = w.copy(), b.copy()
      for s in range(0, len(x), batch):
        xb, yb = x[s:s + batch].astype(np.float64), y[s:s + batch]
        _, gw, gb = logreg_loss_and_grads(cw, cb, xb, yb)
        cw, cb = cw - lr * (gw + mu * (cw - w)), cb - lr * (gb + mu * (cb - b))
      deltas.append((cw - w, cb - b))
      weights.append(len(x))
    weights = np.array(weights, np.float64) / np.sum(weights)
    w = w + sum(wt * d[0] for wt, d in zip(weights, deltas))
    b = b + sum(wt * d[1] for wt, d in zip(weights, deltas))
  return w, b


def test_fed_prox_matches_numpy_proximal_step():
  arrays = _client_arrays(seed=3)
  mu, lr = 0.5, 0.1
  ours = _run(fed_avg.build_fed_prox(MODEL_FN, _sgd(lr), proximal_mu=mu), rounds=2, data=_datasets(arrays))
  w0 = _initial_weights().trainable
  ref_w, ref_b = _numpy_fedprox(w0[0], w0[1], arrays, mu, lr, rounds=2, batch=5)
  assert _max_diff(ours, [ref_w, ref_b]) < 1e-5
  # The proximal term matters here: plain FedAvg lands elsewhere.
  assert _max_diff(_run(fed_avg.build_fed_avg(MODEL_FN, _sgd(lr)), rounds=2, data=_datasets(arrays)), ours) > 1e-4


def test_negative_mu_is_rejected():
  with pytest.raises(ValueError, match='mu'):
    fed_avg.build_fed_prox(MODEL_FN, _sgd(), proximal_mu=-1.0)
