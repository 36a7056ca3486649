"""Sample-level DP-SGD: the `SampleDP` extension on the engine and the stock exports, against stock TFF client work,
a numpy per-example reference, tensorflow-privacy's DP Keras optimizer and the noise law."""

import collections

import numpy as np
import pytest
from scipy import stats
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tff_fl import engine
from tff_fl.algorithms import dp_sgd_client
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import local_training

NUM_FEATURES, NUM_CLASSES = 4, 3
LOSS = tf.keras.losses.sparse_categorical_crossentropy
UNIFORM = tff.learning.ClientWeighting.UNIFORM


def _keras_model():
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(NUM_FEATURES,)),
      tf.keras.layers.Dense(NUM_CLASSES, activation='softmax'),
  ])


def model_fn():
  return tff.learning.models.from_keras_model(
      _keras_model(), loss=tf.keras.losses.SparseCategoricalCrossentropy(),
      input_spec=collections.OrderedDict(x=tf.TensorSpec([None, NUM_FEATURES], tf.float32),
                                         y=tf.TensorSpec([None], tf.int32)),
      metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])


def _client_data(seed, n=12):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, NUM_FEATURES)).astype(np.float32) * 3.0
  y = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
  return x, y


def _dataset(x, y, batch_size):
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(batch_size)


def _initial_weights(seed=0):
  rng = np.random.default_rng(seed)
  kernel = rng.normal(size=(NUM_FEATURES, NUM_CLASSES)).astype(np.float32) * 0.5
  bias = rng.normal(size=(NUM_CLASSES,)).astype(np.float32) * 0.1
  return tff.learning.models.ModelWeights(trainable=[kernel, bias], non_trainable=[])


def _flat(weights):
  return np.concatenate([np.ravel(np.asarray(w)) for w in weights])


def _updates(process, datasets, weights):
  out = process.next(process.initialize(), [weights] * len(datasets), datasets)
  return [_flat(r.update) for r in out.result], out.measurements


def _engine(arrays, clip, z, lr, batch_size, num_slots=1):
  """FedAvg + SampleDP on the engine, server SGD at 1 and uniform weights: one round's weight change is the mean
  client update."""
  return engine.build_process(
      fed_avg.FedAvg(), model_fn, arrays, lambda cid, r: np.arange(len(arrays[cid][0])), batch_size=batch_size,
      client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=lr), client_weighting=UNIFORM,
      extensions=[dp_sgd_client.SampleDP(clip, z, LOSS)], num_slots=num_slots)


def _engine_update(process, ids, weights, round_num=1):
  state = process.set_model_weights(process.initialize(), weights)
  out = process.next(state, engine.Cohort.full(round_num, ids))
  return _flat(weights.trainable) - _flat(process.get_model_weights(out.state).trainable)


def _numpy_clipped_mean_gradient(weights, x, y, clip):
  """Per-example gradients one example at a time (eager Keras), clipped in numpy, averaged."""
  keras_model = _keras_model()
  keras_model.set_weights(weights.trainable)
  grads = []
  for xi, yi in zip(x, y):
    with tf.GradientTape() as tape:
      loss = LOSS(yi[None], keras_model(xi[None], training=True))[0]
    grads.append(_flat(tape.gradient(loss, keras_model.trainable_variables)))
  grads = np.stack(grads)
  norms = np.linalg.norm(grads, axis=1)
  clipped = grads * np.minimum(1.0, clip / norms)[:, None]
  return clipped.mean(axis=0), norms


def _tensorflow_privacy_step(weights, x, y, clip, lr):
  """One step of tensorflow-privacy's DP Keras SGD (microbatches of one example, no noise): weight change."""
  keras_model = _keras_model()
  keras_model.set_weights(weights.trainable)
  keras_model.compile(optimizer=tfp.DPKerasSGDOptimizer(l2_norm_clip=clip, noise_multiplier=0.0,
                                                        num_microbatches=len(x), learning_rate=lr),
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(reduction=tf.keras.losses.Reduction.NONE))
  keras_model.train_on_batch(x, y)
  return _flat(weights.trainable) - _flat(keras_model.trainable_weights)


def test_stock_client_work_no_noise_huge_clip_equals_stock_local_sgd():
  sgd = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  stock = tff.learning.templates.build_model_delta_client_work(model_fn, sgd, UNIFORM)
  dp = dp_sgd_client.build_dp_sgd_client_work(model_fn, sgd, LOSS, l2_norm_clip=1e6, noise_multiplier=0.0)
  datasets = [_dataset(*_client_data(s), batch_size=4) for s in (1, 2)]
  weights = _initial_weights()
  expected, stock_metrics = _updates(stock, datasets, weights)
  actual, dp_metrics = _updates(dp, datasets, weights)
  for a, e in zip(actual, expected):
    assert np.abs(e).max() > 1e-3  # Training moved the weights.
    np.testing.assert_allclose(a, e, atol=1e-6)
  assert dp_metrics['train']['loss'] == pytest.approx(stock_metrics['train']['loss'], abs=1e-6)
  assert dp_metrics['train']['num_examples'] == stock_metrics['train']['num_examples'] == 24


def test_engine_per_example_clipping_matches_numpy_and_tensorflow_privacy():
  clip, lr = 0.05, 1.0
  x, y = _client_data(3, n=6)
  weights = _initial_weights(1)
  expected, norms = _numpy_clipped_mean_gradient(weights, x, y, clip)
  assert (norms > 2 * clip).sum() >= 3  # Clipping is active on most examples.
  i = int(np.argmax(norms))
  process = _engine({'all': (x, y), 'largest': (x[i:i + 1], y[i:i + 1])}, clip, 0.0, lr, batch_size=6)
  update = _engine_update(process, ['all'], weights)  # One step: update = lr * clipped mean gradient.
  np.testing.assert_allclose(update / lr, expected, atol=1e-6)
  np.testing.assert_allclose(update, _tensorflow_privacy_step(weights, x, y, clip, lr), atol=1e-6)
  # Each example contributes at most clip / B, so the step is at most lr * clip.
  assert np.linalg.norm(update) <= lr * clip + 1e-7
  # The example with the largest gradient, alone, moves the weights by exactly lr * clip.
  assert np.linalg.norm(_engine_update(process, ['largest'], weights)) == pytest.approx(lr * clip, rel=1e-5)


def test_engine_noise_is_fresh_per_client_with_std_z_clip_over_batch():
  """K clients with the same data: the round's mean update is the clean clipped gradient + the mean of K
  independent N(0, (zC/B)^2) draws, i.e. variance (zC/B)^2 / K (shared noise would give K times that)."""
  z, clip, batch, num_clients, rounds = 1.5, 0.1, 6, 20, 6
  x, y = _client_data(5, n=batch)
  weights = _initial_weights(3)
  ids = [f'c{k}' for k in range(num_clients)]
  process = _engine({c: (x, y) for c in ids}, clip, z, 1.0, batch_size=batch)
  clean, _ = _numpy_clipped_mean_gradient(weights, x, y, clip)
  noise = np.stack([_engine_update(process, ids, weights, r) - clean for r in range(1, rounds + 1)])
  assert len({tuple(np.round(n, 7)) for n in noise}) == rounds  # Fresh noise every round.
  sigma = z * clip / batch / np.sqrt(num_clients)
  stat = np.sum(noise**2) / sigma**2
  assert stats.chi2.ppf(1e-4, noise.size) < stat < stats.chi2.ppf(1 - 1e-4, noise.size)


def test_engine_noise_repeats_with_the_seed_under_any_slot_layout():
  """The noise is keyed by each client's seed of the round: the same round gives the same update again, also with
  the cohort split over two slots; another round draws other noise."""
  x, y = _client_data(7, n=8)
  ids = [f'c{k}' for k in range(4)]
  arrays = {c: (x + 0.1 * k, y) for k, c in enumerate(ids)}
  weights = _initial_weights(1)
  one_slot = _engine(arrays, 0.1, 2.0, 1.0, batch_size=4)
  two_slots = _engine(arrays, 0.1, 2.0, 1.0, batch_size=4, num_slots=2)
  first = _engine_update(one_slot, ids, weights)
  np.testing.assert_array_equal(first, _engine_update(one_slot, ids, weights))
  np.testing.assert_allclose(first, _engine_update(two_slots, ids, weights), rtol=1e-5, atol=1e-7)
  assert np.max(np.abs(first - _engine_update(one_slot, ids, weights, round_num=2))) > 1e-3


def test_engine_clients_run_on_the_client_axis():
  """The engine's default for this Dense model: the tests above check the client axis's per-example norms."""
  assert _engine({'a': _client_data(1)}, 0.1, 1.0, 1.0, batch_size=4).client_execution == 'client axis'


def test_seeded_gaussian_is_normal_and_a_function_of_its_key():
  key = tf.constant([3, 4], tf.int64)
  draws = local_training.seeded_gaussian([200_001], key, 2.0).numpy()
  assert draws.shape == (200_001,) and draws.dtype == np.float32
  assert stats.kstest(draws / 2.0, 'norm').pvalue > 1e-3
  half = len(draws) // 2  # Box-Muller's cosine and sine halves are independent normals.
  assert abs(np.corrcoef(draws[:half], draws[half:2 * half])[0, 1]) < 0.01
  np.testing.assert_array_equal(local_training.seeded_gaussian([200_001], key, 2.0).numpy(), draws)
  other = local_training.seeded_gaussian([200_001], tf.constant([3, 5], tf.int64), 2.0).numpy()
  assert abs(np.corrcoef(draws, other)[0, 1]) < 0.01
  assert local_training.seeded_gaussian([3, 4], key, 1.0).shape == (3, 4)


def test_stock_learning_process_equals_stock_unweighted_fed_avg():
  sgd = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  dp_process = dp_sgd_client.build_dp_sgd_fed_avg(  # The Keras loss object itself, as the model uses.
      model_fn, sgd, tf.keras.losses.SparseCategoricalCrossentropy(), l2_norm_clip=1e6, noise_multiplier=0.0)
  stock = tff.learning.algorithms.build_unweighted_fed_avg(model_fn, sgd)
  datasets = [_dataset(*_client_data(s), batch_size=4) for s in (5, 6)]
  results = []
  for process in (dp_process, stock):
    state = process.set_model_weights(process.initialize(), _initial_weights(3))
    state = process.next(state, datasets).state
    results.append(process.get_model_weights(state).trainable)
  for a, b in zip(*results):
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize('kwargs, match', [
    (dict(l2_norm_clip=0.0, noise_multiplier=1.0), 'l2_norm_clip'),
    (dict(l2_norm_clip=1.0, noise_multiplier=-1.0), 'noise_multiplier'),
    (dict(l2_norm_clip=1.0, noise_multiplier=1.0, per_example_loss='mse'), 'per_example_loss'),
])
def test_bad_arguments_raise_value_error(kwargs, match):
  kwargs = dict(dict(per_example_loss=LOSS), **kwargs)
  with pytest.raises(ValueError, match=match):
    dp_sgd_client.build_dp_sgd_client_work(model_fn, tff.learning.optimizers.build_sgdm(0.1), **kwargs)
  with pytest.raises(ValueError, match=match):
    dp_sgd_client.SampleDP(**kwargs)
