"""FedNova on quadratic clients (numpy-solvable optimum) where FedAvg with unequal local steps is biased."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import fednova
from tff_fl.models import keras_models

UNIFORM = tff.learning.ClientWeighting.UNIFORM
TARGETS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], np.float32)
STEPS = (1, 4, 16)
LR, SERVER_LR, ROUNDS = 0.01, 6.0, 15
QUAD_SPEC = collections.OrderedDict(x=tf.TensorSpec([1], tf.float32), y=tf.TensorSpec([2], tf.float32))


def _quadratic_model_fn():
  """f_i(x) = 0.5 * ||x - b_i||^2 with x = the bias of Dense(2) on a zero input (MSE over 2 outputs: grad x - b)."""
  keras = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(1,)),
                               tf.keras.layers.Dense(2, kernel_initializer='zeros')])
  return tff.learning.models.from_keras_model(keras, loss=tf.keras.losses.MeanSquaredError(),
                                              input_spec=keras_models.batched_input_spec(QUAD_SPEC))


def _quadratic_datasets():
  """Client i holds STEPS[i] copies of (0, b_i) in batches of 1: STEPS[i] full-gradient steps per round."""
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=np.zeros([n, 1], np.float32), y=np.tile(b, (n, 1)))).batch(1) for b, n in zip(TARGETS, STEPS)]


def _run(process, datasets, rounds):
  state = process.initialize()
  for _ in range(rounds):
    state = process.next(state, datasets).state
  return np.asarray(process.get_model_weights(state).trainable[1])


def _numpy_round(x, normalized):
  deltas, taus = [], []
  for b, tau in zip(TARGETS.astype(np.float64), STEPS):
    y = x.copy()
    for _ in range(tau):
      y = y - LR * (y - b)
    deltas.append(x - y)
    taus.append(tau)
  if normalized:
    update = np.mean(taus) * np.mean([d / t for d, t in zip(deltas, taus)], axis=0)
  else:
    update = np.mean(deltas, axis=0)
  return x - SERVER_LR * update


def test_fednova_reaches_true_optimum_where_fedavg_is_biased():
  optimum = TARGETS.astype(np.float64).mean(0)  # argmin of sum_i 0.5||x - b_i||^2 (uniform p_i).
  server = tff.learning.optimizers.build_sgdm(learning_rate=SERVER_LR)
  nova = _run(fednova.build_fednova(_quadratic_model_fn, LR, server, client_weighting=UNIFORM),
              _quadratic_datasets(), ROUNDS)
  avg = _run(fed_avg.build_fed_avg(_quadratic_model_fn, tff.learning.optimizers.build_sgdm(learning_rate=LR),
                                   server, client_weighting=UNIFORM), _quadratic_datasets(), ROUNDS)
  want_nova, want_avg = np.zeros(2), np.zeros(2)
  for _ in range(ROUNDS):
    want_nova, want_avg = _numpy_round(want_nova, True), _numpy_round(want_avg, False)
  np.testing.assert_allclose(nova, want_nova, atol=1e-4)
  np.testing.assert_allclose(avg, want_avg, atol=1e-4)
  # FedAvg's fixed point weights client i by its steps (the 16-step client dominates); FedNova's does not.
  assert np.linalg.norm(avg - optimum) > 0.5
  assert np.linalg.norm(nova - optimum) < 0.05
  # Both have converged (another round barely moves them): the gap is a biased fixed point, not slowness.
  assert np.linalg.norm(_numpy_round(want_avg, False) - want_avg) < 1e-3


def test_equal_local_steps_is_fed_avg():
  spec = collections.OrderedDict(x=tf.TensorSpec([6], tf.float32), y=tf.TensorSpec([], tf.int32))
  model_fn = keras_models.build_tff_model_fn(lambda: keras_models.logreg([6], 3), spec)
  rng = np.random.default_rng(0)
  data = [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=rng.normal(size=(10, 6)).astype(np.float32), y=rng.integers(0, 3, 10).astype(np.int32))).batch(5)
          for _ in range(3)]
  sgd = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  nova = fednova.build_fednova(model_fn, 0.1)
  stock = tff.learning.algorithms.build_weighted_fed_avg(model_fn, sgd)
  nova_state, stock_state = nova.initialize(), stock.initialize()
  stock_state = stock.set_model_weights(stock_state, nova.get_model_weights(nova_state))
  for _ in range(3):
    nova_state, stock_state = nova.next(nova_state, data).state, stock.next(stock_state, data).state
  for a, b in zip(nova.get_model_weights(nova_state).trainable, stock.get_model_weights(stock_state).trainable):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_momentum_step_norm_matches_geometric_sum():
  rho, tau = 0.9, 7
  want = sum((1 - rho**(tau - k)) / (1 - rho) for k in range(tau))  # coefficients of g_0..g_{tau-1}.
  assert abs(float(fednova.step_norm(tf.constant(float(tau)), rho)) - want) < 1e-4
  assert float(fednova.step_norm(tf.constant(5.0), 0.0)) == 5.0
