"""Stochastic quantization (unbiased, on its grid) and top-k (exactly the k largest magnitudes)."""

import collections
import math

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_fl.aggregators import compression

VALUE_TYPE = tff.to_type(collections.OrderedDict(a=tff.TensorType(np.float32, [30]),
                                                 b=tff.TensorType(np.float32, [2, 5])))
D, LEAVES = 40, 2


def _values(rng, scale=1.0):
  return collections.OrderedDict(a=(scale * rng.normal(size=30)).astype(np.float32),
                                 b=(scale * rng.normal(size=(2, 5))).astype(np.float32))


def _unweighted(factory, clients):
  process = factory.create(VALUE_TYPE)
  return process.next(process.initialize(), clients)


def test_weightedness_follows_inner_and_type_signatures():
  weighted = compression.quantize(8)
  assert isinstance(weighted, tff.aggregators.WeightedAggregationFactory)
  process = weighted.create(VALUE_TYPE, tff.TensorType(np.float32))
  stock = tff.aggregators.MeanFactory().create(VALUE_TYPE, tff.TensorType(np.float32))
  assert process.initialize.type_signature.result == stock.initialize.type_signature.result
  assert process.next.type_signature.parameter == stock.next.type_signature.parameter
  assert process.next.type_signature.result.measurements == tff.FederatedType(collections.OrderedDict(
      bits_per_client=np.float32, dense_bits_per_client=np.float32,
      inner=stock.next.type_signature.result.measurements.member), tff.SERVER)
  unweighted = compression.topk(0.1, inner=tff.aggregators.SumFactory())
  assert isinstance(unweighted, tff.aggregators.UnweightedAggregationFactory)
  assert unweighted.create(VALUE_TYPE).next.type_signature.result.result == tff.FederatedType(VALUE_TYPE, tff.SERVER)


def test_quantize_is_unbiased_and_independent_across_clients():
  rng = np.random.default_rng(0)
  x = _values(rng)
  bits, n = 2, 400
  out = _unweighted(compression.quantize(bits, inner=tff.aggregators.UnweightedMeanFactory()), [x] * n)
  for key in x:
    step = (x[key].max() - x[key].min()) / (2**bits - 1)
    # One stochastic rounding has variance <= step^2/4; the mean of n independent ones has std <= step/(2 sqrt n).
    tolerance = 5 * step / (2 * math.sqrt(n))
    np.testing.assert_allclose(out.result[key], x[key], atol=tolerance)
  assert out.measurements['bits_per_client'] == bits * D + 64 * LEAVES
  assert out.measurements['dense_bits_per_client'] == 32 * D


def test_seeded_quantize_repeats_and_is_unbiased_over_distinct_values():
  """With a seed the rounding repeats exactly and is fresh for another seed; over many distinct clients, even
  close ones, it stays unbiased (independent streams)."""
  rng = np.random.default_rng(3)
  x = _values(rng)
  sums = [_unweighted(compression.quantize(2, inner=tff.aggregators.SumFactory(), seed=s), [x]).result
          for s in (7, 7, 8)]
  for key in x:
    np.testing.assert_array_equal(sums[0][key], sums[1][key])
    assert np.max(np.abs(sums[0][key] - sums[2][key])) > 0
  n, bits = 400, 2
  clients = [collections.OrderedDict((k, v + np.float32(1e-3) * rng.normal(size=v.shape).astype(np.float32))
                                     for k, v in x.items()) for _ in range(n)]
  out = _unweighted(compression.quantize(bits, inner=tff.aggregators.UnweightedMeanFactory(), seed=7), clients)
  for key in x:
    truth = np.mean([c[key] for c in clients], axis=0)
    step = (x[key].max() - x[key].min()) / (2**bits - 1)
    np.testing.assert_allclose(out.result[key], truth, atol=5 * step / (2 * math.sqrt(n)))


def test_quantize_decodes_to_its_grid_and_keeps_range():
  rng = np.random.default_rng(1)
  x = _values(rng, scale=3.0)
  bits = 3
  out = _unweighted(compression.quantize(bits, inner=tff.aggregators.SumFactory()), [x])
  for key in x:
    lo, hi = x[key].min(), x[key].max()
    q = (out.result[key] - lo) / ((hi - lo) / (2**bits - 1))
    np.testing.assert_allclose(q, np.round(q), atol=1e-3)
    assert q.min() > -1e-3 and q.max() < 2**bits - 1 + 1e-3
    # Stochastic rounding moves each coordinate to one of its two neighbouring grid points.
    assert np.all(np.abs(out.result[key] - x[key]) <= (hi - lo) / (2**bits - 1) + 1e-5)


def test_quantize_all_equal_values_are_exact():
  x = collections.OrderedDict(a=np.full(30, 0.3, np.float32), b=np.full((2, 5), -2.0, np.float32))
  out = _unweighted(compression.quantize(1, inner=tff.aggregators.SumFactory()), [x])
  for key in x:
    np.testing.assert_array_equal(out.result[key], x[key])


@pytest.mark.parametrize('fraction', [0.05, 0.26, 1.0])
def test_topk_keeps_exactly_the_k_largest_magnitudes(fraction):
  rng = np.random.default_rng(2)
  flat = rng.permutation(np.linspace(0.1, 2.0, D)).astype(np.float32)  # Distinct magnitudes.
  flat = flat * np.where(rng.random(D) < 0.5, -1.0, 1.0).astype(np.float32)
  x = collections.OrderedDict(a=flat[:30], b=flat[30:].reshape(2, 5))  # Leaf order of flattening: a, b.
  out = _unweighted(compression.topk(fraction, inner=tff.aggregators.SumFactory()), [x])
  got = np.concatenate([out.result['a'], out.result['b'].ravel()])
  k = max(1, math.ceil(fraction * D))
  keep = np.argsort(-np.abs(flat), kind='stable')[:k]
  expected = np.zeros(D, np.float32)
  expected[keep] = flat[keep]
  np.testing.assert_array_equal(got, expected)
  assert np.count_nonzero(got) == k
  assert out.measurements['bits_per_client'] == k * (32 + math.ceil(math.log2(D)))


def test_topk_ties_keep_exactly_k():
  x = collections.OrderedDict(a=np.ones(30, np.float32), b=np.ones((2, 5), np.float32))
  out = _unweighted(compression.topk(0.1, inner=tff.aggregators.SumFactory()), [x])
  assert np.count_nonzero(out.result['a']) + np.count_nonzero(out.result['b']) == 4


@pytest.mark.parametrize('bad', [lambda: compression.quantize(0), lambda: compression.quantize(17),
                                 lambda: compression.quantize(2.0), lambda: compression.topk(0.0),
                                 lambda: compression.topk(1.5)])
def test_bad_parameters(bad):
  with pytest.raises(ValueError):
    bad()
