"""Our factories plugged into stock `tff.learning.algorithms.build_weighted_fed_avg` (3 clients, 1 round)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import aggregators as agg

NUM_CLIENTS = 3


def _model_fn():
  keras_model = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(4,)),
                                     tf.keras.layers.Dense(3, kernel_initializer='glorot_uniform')])
  spec = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32))
  return tff.learning.models.from_keras_model(
      keras_model, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), input_spec=spec)


def _client_data():
  rng = np.random.default_rng(0)
  return [tf.data.Dataset.from_tensor_slices((rng.normal(size=(6 + 2 * i, 4)).astype(np.float32),
                                              rng.integers(0, 3, size=6 + 2 * i).astype(np.int32))).batch(4)
          for i in range(NUM_CLIENTS)]


def _fed_avg(aggregator):
  return tff.learning.algorithms.build_weighted_fed_avg(
      _model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.5),
      server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0), model_aggregator=aggregator)


def _flat(model_weights):
  return np.concatenate([np.ravel(w) for w in model_weights.trainable])


def test_readme_example_clip_around_trimmed_mean():
  # README: agg.clip(norm=1.0, inner=agg.trimmed_mean(beta=0.34)) passed to build_weighted_fed_avg.
  process = _fed_avg(agg.clip(norm=1.0, inner=agg.trimmed_mean(beta=0.34)))
  state = process.initialize()
  out = process.next(state, _client_data())
  measurements = out.metrics['aggregator']
  assert measurements['clipping']['trimmed_count'] == 2
  assert measurements['clipping']['cohort_size'] == NUM_CLIENTS
  assert 0 <= measurements['clipped_count'] <= NUM_CLIENTS
  change = _flat(process.get_model_weights(out.state)) - _flat(process.get_model_weights(state))
  assert 0.0 < np.linalg.norm(change) <= 1.0 + 1e-5  # The median of clipped updates has norm <= 1.


def test_median_fed_avg_round_equals_numpy_median_of_client_deltas():
  data = _client_data()
  process = _fed_avg(agg.median())
  state = process.initialize()
  initial = process.get_model_weights(state)
  # Reference: each client's delta from stock FedAvg run on that client alone with a plain sum.
  deltas = []
  single = _fed_avg(tff.aggregators.as_weighted_aggregator(tff.aggregators.SumFactory()))
  for dataset in data:
    single_state = single.set_model_weights(single.initialize(), initial)
    after = single.get_model_weights(single.next(single_state, [dataset]).state)
    deltas.append(_flat(initial) - _flat(after))
  out = process.next(state, data)
  expected = _flat(initial) - np.median(np.stack(deltas), axis=0)
  np.testing.assert_allclose(_flat(process.get_model_weights(out.state)), expected, atol=1e-5)


@pytest.fixture(scope='module')
def mean_round():
  """(initial model weights, weights after one stock FedAvg round with tff.aggregators.MeanFactory)."""
  process = _fed_avg(tff.aggregators.MeanFactory())
  state = process.initialize()
  return process.get_model_weights(state), _flat(process.get_model_weights(process.next(state, _client_data()).state))


def _one_round(spec, initial, lower_secure=False):
  process = _fed_avg(agg.build_aggregator(spec, cohort_size=NUM_CLIENTS))
  state = process.set_model_weights(process.initialize(), initial)
  if not lower_secure:
    out = process.next(state, _client_data())
    return _flat(process.get_model_weights(out.state)), out.metrics['aggregator']
  # TFF's C++ runtime has no SecAgg: lower the secure intrinsics to checked plain sums (tff.backends.test).
  out = tff.backends.test.replace_secure_intrinsics_with_bodies(process.next)(state, _client_data())
  return _flat(process.get_model_weights(out['state'])), out['metrics']['aggregator']


def test_krum_runs_in_stock_fed_avg(mean_round):
  initial, _ = mean_round
  after, measurements = _one_round('krum(0)', initial)
  assert measurements['cohort_size'] == NUM_CLIENTS and measurements['selected_indices'].shape == (1,)
  assert np.all(np.isfinite(after)) and not np.allclose(after, _flat(initial))


@pytest.mark.parametrize('spec,lower_secure,bits', [
    ('quantize(16)>mean', False, 16 * 15 + 2 * 64),  # d = 4*3 kernel + 3 bias; lo/hi per leaf.
    ('secure(16)>mean', True, 16 * 15),
])
def test_lossy_means_in_stock_fed_avg_match_the_plain_mean(mean_round, spec, lower_secure, bits):
  initial, expected = mean_round
  after, measurements = _one_round(spec, initial, lower_secure)
  np.testing.assert_allclose(after, expected, atol=1e-3)
  assert measurements['bits_per_client'] == bits
