"""Secure sum / mean over TFF's SecureSumFactory: numerics vs numpy within the quantization error."""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_fl.aggregators import secure

VALUE_TYPE = tff.to_type(collections.OrderedDict(a=tff.TensorType(np.float32, [5]), b=tff.TensorType(np.float32, [3])))
WEIGHT_TYPE = tff.TensorType(np.float32)


def _run(process, *args):
  # TFF's C++ runtime has no SecAgg: lower the secure intrinsics to checked plain sums, as tff.backends.test does.
  # The lowered computation returns a plain OrderedDict(state=, result=, measurements=).
  out = tff.backends.test.replace_secure_intrinsics_with_bodies(process.next)(process.initialize(), *args)
  return tff.templates.MeasuredProcessOutput(**out)


def _clients(rows):
  return [collections.OrderedDict(a=r[:5], b=r[5:]) for r in rows.astype(np.float32)]


def _flat(value):
  return np.concatenate([value['a'], value['b']])


def test_secure_sum_type_signature_and_bit_width():
  process = secure.secure_sum(12, 2.0).create(VALUE_TYPE)
  assert isinstance(secure.secure_sum(12), tff.aggregators.UnweightedAggregationFactory)
  assert process.next.type_signature.result.result == tff.FederatedType(VALUE_TYPE, tff.SERVER)
  measurements = process.next.type_signature.result.measurements.member
  assert measurements.bits_per_client == tff.TensorType(np.float32)
  out = _run(process, _clients(np.zeros((2, 8))))
  assert out.measurements['bits_per_client'] == 12 * 8
  # TFF's SecureSumFactory reports the integer range it sums: [0, 2^bits - 1] is a 12-bit secure sum.
  assert out.measurements['secure']['secure_upper_threshold'] == 2**12 - 1
  assert out.measurements['secure']['secure_lower_threshold'] == 0


def test_secure_sum_matches_numpy_sum_of_clipped_values():
  rows = np.random.default_rng(0).normal(scale=0.8, size=(6, 8))
  out = _run(secure.secure_sum(16, 1.0).create(VALUE_TYPE), _clients(rows))
  step = 2.0 / (2**16 - 1)
  np.testing.assert_allclose(_flat(out.result), np.clip(rows, -1.0, 1.0).sum(0), atol=6 * step + 1e-5)
  assert out.measurements['clipped_coordinates'] == int(np.sum(np.abs(rows) > 1.0))


def test_seeded_secure_sum_repeats_and_stays_within_quantization():
  rows = np.random.default_rng(4).normal(scale=0.5, size=(6, 8))
  step = 2.0 / (2**4 - 1)
  sums = [_flat(_run(secure.secure_sum(4, 1.0, seed=s).create(VALUE_TYPE), _clients(rows)).result) for s in (3, 3, 4)]
  np.testing.assert_array_equal(sums[0], sums[1])
  assert np.max(np.abs(sums[0] - sums[2])) > 0
  np.testing.assert_allclose(sums[0], np.clip(rows, -1.0, 1.0).sum(0), atol=6 * step + 1e-5)


def test_secure_mean_is_the_weighted_mean():
  rows = np.random.default_rng(1).uniform(-0.3, 0.3, size=(5, 8))
  weights = [1.0, 2.0, 3.0, 4.0, 10.0]
  process = secure.secure_mean(16, 1.0).create(VALUE_TYPE, WEIGHT_TYPE)
  out = _run(process, _clients(rows), weights)
  np.testing.assert_allclose(_flat(out.result), np.average(rows, axis=0, weights=weights), atol=1e-4)
  assert out.measurements['clipped_coordinates'] == 0


def test_secure_sum_under_tff_mean_factory():
  rows = np.random.default_rng(2).uniform(-1.0, 1.0, size=(4, 8))
  weights = [1.0, 1.0, 2.0, 4.0]
  factory = tff.aggregators.MeanFactory(value_sum_factory=secure.secure_sum(16, 4.0))  # bounds w * x.
  process = factory.create(VALUE_TYPE, WEIGHT_TYPE)
  out = _run(process, _clients(rows), weights)
  np.testing.assert_allclose(_flat(out.result), np.average(rows, axis=0, weights=weights), atol=1e-3)


@pytest.mark.parametrize('bad', [lambda: secure.secure_sum(0), lambda: secure.secure_sum(17),
                                 lambda: secure.secure_mean(8, 0.0), lambda: secure.secure_mean(8.0)])
def test_bad_parameters(bad):
  with pytest.raises(ValueError):
    bad()
