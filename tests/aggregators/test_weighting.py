"""Weighting: example-count mean, uniform mean, and a client-side weight function of loss statistics."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.aggregators import weighting

VALUE_TYPE = tff.TensorType(np.float32, [3])


def _run(factory, values, weights, weight_type=tff.TensorType(np.float32)):
  process = factory.create(VALUE_TYPE, tff.to_type(weight_type))
  return process.next(process.initialize(), values, weights)


def test_mean_and_uniform_mean():
  values = [np.array([1.0, 2.0, 3.0], np.float32) * i for i in range(1, 5)]
  weights = [10.0, 1.0, 1.0, 20.0]
  out = _run(weighting.mean(), values, weights)
  np.testing.assert_allclose(out.result, np.average(values, axis=0, weights=weights), rtol=1e-6)
  out = _run(weighting.uniform_mean(), values, weights)
  np.testing.assert_allclose(out.result, np.mean(values, axis=0), rtol=1e-6)


def test_loss_stats_accumulate_to_numpy_variance():
  losses = np.random.default_rng(0).gamma(2.0, size=37).astype(np.float32)
  stats = weighting.loss_stats_zero()
  for batch in np.array_split(losses, 4):
    stats = weighting.accumulate_loss_stats(stats, tf.constant(batch))
  assert float(stats['num_examples']) == 37.0
  np.testing.assert_allclose(float(weighting.loss_variance(stats)), np.var(losses), rtol=1e-4)
  np.testing.assert_allclose(float(weighting.inverse_loss_variance(stats, epsilon=0.01)),
                             1.0 / (np.var(losses) + 0.01), rtol=1e-4)


def test_client_weighted_inverse_loss_variance_matches_numpy():
  rng = np.random.default_rng(1)
  values = [rng.normal(size=3).astype(np.float32) for _ in range(4)]
  losses = [rng.normal(1.0, s, size=20) for s in (0.1, 0.5, 1.0, 3.0)]  # Noisier clients, smaller weight.
  stats = [collections.OrderedDict(num_examples=np.float32(len(l)), loss_sum=np.float32(l.sum()),
                                   loss_sq_sum=np.float32((l**2).sum())) for l in losses]
  factory = weighting.client_weighted(weighting.inverse_loss_variance)
  out = _run(factory, values, stats, weighting.LOSS_STATS_TYPE)
  expected_w = np.array([1.0 / (np.var(l) + 1e-3) for l in losses])
  np.testing.assert_allclose(out.result, np.average(values, axis=0, weights=expected_w), rtol=1e-3)
  np.testing.assert_allclose(out.measurements['weight_sum'], expected_w.sum(), rtol=1e-3)


def test_client_weighted_type_signature_and_scalar_weight_fn():
  factory = weighting.client_weighted(tf.sqrt, inner=tff.aggregators.MeanFactory())
  process = factory.create(VALUE_TYPE, tff.TensorType(np.float32))
  stock = tff.aggregators.MeanFactory().create(VALUE_TYPE, tff.TensorType(np.float32))
  assert process.initialize.type_signature == stock.initialize.type_signature
  assert process.next.type_signature.parameter == stock.next.type_signature.parameter
  values = [np.full(3, v, np.float32) for v in (1.0, 2.0, 3.0)]
  out = process.next(process.initialize(), values, [1.0, 4.0, 16.0])
  np.testing.assert_allclose(out.result, np.average(values, axis=0, weights=[1.0, 2.0, 4.0]), rtol=1e-6)


def test_client_weighted_rejects_bad_arguments():
  with pytest.raises(ValueError, match='weight_fn must be callable'):
    weighting.client_weighted(3.0)
  with pytest.raises(ValueError, match='WeightedAggregationFactory'):
    weighting.client_weighted(tf.sqrt, inner=tff.aggregators.SumFactory())
  with pytest.raises(ValueError, match='scalar'):
    weighting.client_weighted(lambda w: tf.stack([w, w])).create(VALUE_TYPE, tff.TensorType(np.float32))
