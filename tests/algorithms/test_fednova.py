"""FedNova on quadratic clients (numpy-solvable optimum) where FedAvg with unequal local steps is biased: the
definition on the engine (unequal steps from stragglers' partial work) and its stock export, against numpy."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import fednova
from tff_fl.models import keras_models

UNIFORM = tff.learning.ClientWeighting.UNIFORM
TARGETS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], np.float32)
STEPS = (1, 4, 16)
LR, SERVER_LR, ROUNDS = 0.01, 6.0, 15
QUAD_SPEC = collections.OrderedDict(x=tf.TensorSpec([1], tf.float32), y=tf.TensorSpec([2], tf.float32))
IDS = ['0', '1', '2']


def _quadratic_model_fn():
  """f_i(x) = 0.5 * ||x - b_i||^2 with x = the bias of Dense(2) on a zero input (MSE over 2 outputs: grad x - b)."""
  keras = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(1,)),
                               tf.keras.layers.Dense(2, kernel_initializer='zeros')])
  return tff.learning.models.from_keras_model(keras, loss=tf.keras.losses.MeanSquaredError(),
                                              input_spec=keras_models.batched_input_spec(QUAD_SPEC))


def _quadratic_arrays(copies):
  """Client i holds copies[i] copies of (0, b_i); in batches of 1 each is one full-gradient step."""
  return {cid: (np.zeros([n, 1], np.float32), np.tile(b, (n, 1))) for cid, b, n in zip(IDS, TARGETS, copies)}


def _numpy_round(x, normalized, momentum=0.0):
  """One round from x: client i runs STEPS[i] steps of SGD(m) on 0.5||y - b_i||^2; server SGD at SERVER_LR."""
  deltas, norms = [], []
  for b, tau in zip(TARGETS.astype(np.float64), STEPS):
    y, m = x.copy(), np.zeros_like(x)
    for _ in range(tau):
      m = momentum * m + (y - b)
      y = y - LR * m
    deltas.append(x - y)
    norms.append(float(fednova.step_norm(tf.constant(float(tau)), momentum)))
  if normalized:
    update = np.mean(norms) * np.mean([d / a for d, a in zip(deltas, norms)], axis=0)
  else:
    update = np.mean(deltas, axis=0)
  return x - SERVER_LR * update


def _numpy_run(normalized, momentum=0.0):
  x = np.zeros(2)
  for _ in range(ROUNDS):
    x = _numpy_round(x, normalized, momentum)
  return x


def _engine_run(algorithm):
  """ROUNDS engine rounds where every client holds 16 examples but client i finishes only STEPS[i] batches."""
  process = engine.build_process(
      algorithm, _quadratic_model_fn, _quadratic_arrays([16] * 3), lambda cid, r: np.arange(16), batch_size=1,
      client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=LR),
      server_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=SERVER_LR), client_weighting=UNIFORM)
  state = process.initialize()
  for r in range(1, ROUNDS + 1):
    state = process.next(state, engine.Cohort(r, tuple(IDS), STEPS)).state
  return np.asarray(process.get_model_weights(state).trainable[1])


def test_engine_fednova_reaches_true_optimum_where_fedavg_is_biased():
  optimum = TARGETS.astype(np.float64).mean(0)  # argmin of sum_i 0.5||x - b_i||^2 (uniform p_i).
  nova, avg = _engine_run(fednova.FedNova(LR)), _engine_run(fed_avg.FedAvg())
  want_nova, want_avg = _numpy_run(True), _numpy_run(False)
  np.testing.assert_allclose(nova, want_nova, atol=1e-4)
  np.testing.assert_allclose(avg, want_avg, atol=1e-4)
  # FedAvg's fixed point weights client i by its steps (the 16-step client dominates); FedNova's does not.
  assert np.linalg.norm(avg - optimum) > 0.5
  assert np.linalg.norm(nova - optimum) < 0.05
  # Both have converged (another round barely moves them): the gap is a biased fixed point, not slowness.
  assert np.linalg.norm(_numpy_round(want_avg, False) - want_avg) < 1e-3


def test_stock_export_with_momentum_matches_numpy():
  """`build_fednova` (stock LearningProcess on tf.data; unequal steps from unequal data) with client momentum."""
  rho = 0.5
  process = fednova.build_fednova(_quadratic_model_fn, LR, tff.learning.optimizers.build_sgdm(SERVER_LR),
                                  client_momentum=rho, client_weighting=UNIFORM)
  datasets = [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(1)
              for x, y in _quadratic_arrays(STEPS).values()]
  state = process.initialize()
  for _ in range(ROUNDS):
    state = process.next(state, datasets).state
  got = np.asarray(process.get_model_weights(state).trainable[1])
  np.testing.assert_allclose(got, _numpy_run(True, rho), atol=1e-4)
  assert np.linalg.norm(_numpy_run(True, rho) - _numpy_run(True, 0.0)) > 1e-2  # Momentum changed the trajectory.


def test_equal_local_steps_is_stock_fed_avg():
  spec = collections.OrderedDict(x=tf.TensorSpec([6], tf.float32), y=tf.TensorSpec([], tf.int32))
  model_fn = keras_models.build_tff_model_fn(lambda: keras_models.logreg([6], 3), spec)
  rng = np.random.default_rng(0)
  arrays = {c: (rng.normal(size=(10, 6)).astype(np.float32), rng.integers(0, 3, 10).astype(np.int32)) for c in IDS}
  sgd = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  nova = engine.build_process(fednova.FedNova(0.1), model_fn, arrays, lambda cid, r: np.arange(10), batch_size=5,
                              client_optimizer=sgd)
  stock = tff.learning.algorithms.build_weighted_fed_avg(model_fn, sgd)
  nova_state, stock_state = nova.initialize(), stock.initialize()
  stock_state = stock.set_model_weights(stock_state, nova.get_model_weights(nova_state))
  data = [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(5) for x, y in arrays.values()]
  for r in range(1, 4):
    nova_state = nova.next(nova_state, engine.Cohort.full(r, IDS)).state
    stock_state = stock.next(stock_state, data).state
  got, want = nova.get_model_weights(nova_state).trainable, stock.get_model_weights(stock_state).trainable
  initial = nova.get_model_weights(nova.initialize()).trainable
  assert max(np.max(np.abs(np.asarray(w) - np.asarray(i))) for w, i in zip(want, initial)) > 1e-2  # It trained.
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_momentum_step_norm_matches_geometric_sum():
  rho, tau = 0.9, 7
  want = sum((1 - rho**(tau - k)) / (1 - rho) for k in range(tau))  # coefficients of g_0..g_{tau-1}.
  assert abs(float(fednova.step_norm(tf.constant(float(tau)), rho)) - want) < 1e-4
  assert float(fednova.step_norm(tf.constant(5.0), 0.0)) == 5.0


def _niid_bench_fednova_round(x, sizes, lr, rho, wd):
  """One round of NIID-Bench's FedNova (`train_net_fednova` + its server branch) in float64 on the quadratic clients:
  client i runs tau_i = n_i steps of torch SGD(lr, momentum=rho, weight_decay=wd) on 0.5||y - b_i||^2 (batches of 1);
  a_i = (tau - rho (1 - rho^tau) / (1 - rho)) / (1 - rho); d_i = (x - y_i) / a_i; p_i = n_i / sum n;
  x <- x - (sum p_i a_i) * sum p_i d_i."""
  p = np.asarray(sizes, np.float64) / np.sum(sizes)
  ds, as_ = [], []
  for b, tau in zip(TARGETS.astype(np.float64), sizes):
    y, buf = x.copy(), None
    for _ in range(tau):
      g = (y - b) + wd * y
      buf = g if buf is None else rho * buf + g
      y = y - lr * buf
    a = (tau - rho * (1 - rho**tau) / (1 - rho)) / (1 - rho)
    ds.append((x - y) / a)
    as_.append(a)
  return x - np.dot(p, as_) * np.sum(p[:, None] * np.asarray(ds), axis=0)


def test_niid_bench_momentum_and_weight_decay_match_numpy():
  """Unequal data (tau_i = n_i), p_i by examples, momentum 0.9 and weight decay, server SGD at lr 1 (NIID-Bench)."""
  sizes, lr, rho, wd = (3, 7, 12), 0.02, 0.9, 0.05
  process = engine.build_process(
      fednova.FedNova(lr, rho, wd), _quadratic_model_fn, _quadratic_arrays(sizes),
      lambda cid, r: np.arange(sizes[int(cid)]), batch_size=1,
      client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=lr),
      server_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=1.0),
      client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES)
  state, want = process.initialize(), np.zeros(2)
  for r in range(1, 6):
    state = process.next(state, engine.Cohort.full(r, IDS)).state
    want = _niid_bench_fednova_round(want, sizes, lr, rho, wd)
  np.testing.assert_allclose(np.asarray(process.get_model_weights(state).trainable[1]), want, atol=1e-5)
  no_decay = np.zeros(2)
  for _ in range(5):
    no_decay = _niid_bench_fednova_round(no_decay, sizes, lr, rho, 0.0)
  assert np.linalg.norm(want - no_decay) > 1e-3  # Weight decay changed the trajectory.


@pytest.mark.parametrize('kwargs, match', [
    (dict(client_learning_rate=0.1, weight_decay=-1.0), '^weight_decay must be >= 0; got -1.0.$'),
    (dict(client_learning_rate=0.0), '^client_learning_rate must be > 0; got 0.0.$'),
    (dict(client_learning_rate=0.1, client_momentum=1.0), r'^client_momentum must be in \[0, 1\); got 1.0.$'),
])
def test_bad_hyperparameters_are_one_line_value_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    fednova.FedNova(**kwargs).validate()
