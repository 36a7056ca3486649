"""Our factories plugged into stock `tff.learning.algorithms.build_weighted_fed_avg` (3 clients, 1 round)."""

import collections

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


@pytest.mark.parametrize('spec,measurement_key', [
    ('krum(0)', 'selected_indices'),
    ('quantize(8)>mean', 'bits_per_client'),
    ('topk(0.5)>uniform_mean', 'bits_per_client'),
    ('adaptive_clip(0.5)>mean', 'clipping_norm'),
])
def test_spec_factories_run_in_stock_fed_avg(spec, measurement_key):
  process = _fed_avg(agg.build_aggregator(spec, cohort_size=NUM_CLIENTS))
  state = process.initialize()
  out = process.next(state, _client_data())
  assert measurement_key in out.metrics['aggregator']
  after = _flat(process.get_model_weights(out.state))
  assert np.all(np.isfinite(after))
  assert not np.allclose(after, _flat(process.get_model_weights(state)))


def test_secure_mean_in_stock_fed_avg_matches_plain_mean(secure_context):
  del secure_context
  data = _client_data()
  plain = _fed_avg(tff.aggregators.MeanFactory())
  secured = _fed_avg(agg.build_aggregator('secure(16)>mean'))
  state = plain.initialize()
  expected = _flat(plain.get_model_weights(plain.next(state, data).state))
  sec_state = secured.set_model_weights(secured.initialize(), plain.get_model_weights(state))
  out = secured.next(sec_state, data)
  np.testing.assert_allclose(_flat(secured.get_model_weights(out.state)), expected, atol=1e-3)
  assert out.metrics['aggregator']['clipped_coordinates'] == 0
