"""Sample-level DP client work vs stock TFF client work, a numpy per-example reference and the noise law."""

import numpy as np
import pytest
from scipy import stats
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import dp_sgd_client

NUM_FEATURES, NUM_CLASSES = 4, 3
LOSS = tf.keras.losses.sparse_categorical_crossentropy


def _keras_model():
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(NUM_FEATURES,)),
      tf.keras.layers.Dense(NUM_CLASSES, activation='softmax'),
  ])


def model_fn():
  return tff.learning.models.from_keras_model(
      _keras_model(), loss=tf.keras.losses.SparseCategoricalCrossentropy(),
      input_spec=(tf.TensorSpec([None, NUM_FEATURES], tf.float32), tf.TensorSpec([None], tf.int32)),
      metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])


def _client_data(seed, n=12):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, NUM_FEATURES)).astype(np.float32) * 3.0
  y = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
  return x, y


def _dataset(x, y, batch_size):
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def _initial_weights(seed=0):
  rng = np.random.default_rng(seed)
  kernel = rng.normal(size=(NUM_FEATURES, NUM_CLASSES)).astype(np.float32) * 0.5
  bias = rng.normal(size=(NUM_CLASSES,)).astype(np.float32) * 0.1
  return tff.learning.models.ModelWeights(trainable=[kernel, bias], non_trainable=[])


def _updates(process, datasets, weights):
  out = process.next(process.initialize(), [weights] * len(datasets), datasets)
  return [np.concatenate([np.ravel(u) for u in r.update]) for r in out.result], out.measurements


def _numpy_clipped_mean_gradient(weights, x, y, clip):
  """Per-example gradients one example at a time (eager Keras), clipped in numpy, averaged."""
  keras_model = _keras_model()
  keras_model.set_weights(weights.trainable)
  grads = []
  for xi, yi in zip(x, y):
    with tf.GradientTape() as tape:
      loss = LOSS(yi[None], keras_model(xi[None], training=True))[0]
    g = np.concatenate([np.ravel(t) for t in tape.gradient(loss, keras_model.trainable_variables)])
    grads.append(g)
  grads = np.stack(grads)
  norms = np.linalg.norm(grads, axis=1)
  clipped = grads * np.minimum(1.0, clip / norms)[:, None]
  return clipped.mean(axis=0), norms


def test_no_noise_huge_clip_equals_stock_local_sgd():
  sgd = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  stock = tff.learning.templates.build_model_delta_client_work(model_fn, sgd, tff.learning.ClientWeighting.UNIFORM)
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


def test_per_example_clipping_matches_numpy_reference_and_bounds_contributions():
  clip, lr = 0.05, 1.0
  x, y = _client_data(3, n=6)
  weights = _initial_weights(1)
  dp = dp_sgd_client.build_dp_sgd_client_work(
      model_fn, tff.learning.optimizers.build_sgdm(learning_rate=lr), LOSS, l2_norm_clip=clip, noise_multiplier=0.0)
  (update,), _ = _updates(dp, [_dataset(x, y, batch_size=6)], weights)  # One step: update = lr * gradient.
  expected, norms = _numpy_clipped_mean_gradient(weights, x, y, clip)
  assert (norms > 2 * clip).sum() >= 3  # Clipping is active on most examples.
  np.testing.assert_allclose(update / lr, expected, atol=1e-6)
  # Each example contributes at most clip / B, so the step is at most lr * clip.
  assert np.linalg.norm(update) <= lr * clip + 1e-7
  # The example with the largest gradient, alone, moves the weights by exactly lr * clip.
  i = int(np.argmax(norms))
  (single,), _ = _updates(dp, [_dataset(x[i:i + 1], y[i:i + 1], batch_size=1)], weights)
  assert np.linalg.norm(single) == pytest.approx(lr * clip, rel=1e-5)


def test_noise_std_is_noise_multiplier_times_clip_over_batch():
  z, clip, batch, num_clients = 1.5, 0.1, 6, 40
  x, y = _client_data(4, n=batch)
  weights = _initial_weights(2)
  opt = tff.learning.optimizers.build_sgdm(learning_rate=1.0)
  noisy = dp_sgd_client.build_dp_sgd_client_work(model_fn, opt, LOSS, l2_norm_clip=clip, noise_multiplier=z)
  updates, _ = _updates(noisy, [_dataset(x, y, batch)] * num_clients, weights)
  clean, _ = _numpy_clipped_mean_gradient(weights, x, y, clip)
  noise = np.stack(updates) - clean  # [clients, params]; one SGD step, lr 1.
  assert len({tuple(np.round(n, 6)) for n in noise}) == num_clients  # Fresh noise per client.
  sigma = z * clip / batch
  dof = noise.size
  stat = np.sum(noise**2) / sigma**2  # ~ chi2(dof) when the noise is N(0, sigma^2) iid.
  assert stats.chi2.ppf(1e-4, dof) < stat < stats.chi2.ppf(1 - 1e-4, dof)
  assert abs(noise.mean()) < 5 * sigma / np.sqrt(dof)


def test_composes_into_learning_process_equal_to_stock_unweighted_fed_avg():
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

