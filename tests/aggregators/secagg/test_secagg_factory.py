"""The SecAgg mean factory on TFF's runtime: the weighted mean of the survivors within the quantization error,
zeros and aborted=1 below t survivors, and a one-line refusal of a plain float weight."""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_fl import aggregators
from tff_fl.aggregators.secagg import factory

N = 8
VALUE_TYPE = tff.to_type(collections.OrderedDict(a=tff.TensorType(np.float32, [5]), b=tff.TensorType(np.float32, [3])))
WEIGHT_TYPE = tff.to_type(collections.OrderedDict(weight=np.float32, secagg=factory.input_type(N)))


def _inputs(rows, weights, alive, n, round_num=1):
  alive_padded = np.zeros(N, np.int32)
  alive_padded[:n] = alive
  values, ws = [], []
  for i in np.flatnonzero(alive):
    values.append(collections.OrderedDict(a=rows[i, :5].astype(np.float32), b=rows[i, 5:].astype(np.float32)))
    ws.append(collections.OrderedDict(weight=np.float32(weights[i]), secagg=collections.OrderedDict(
        index=np.int32(i), n=np.int32(n), round=np.int32(round_num), alive=alive_padded)))
  return values, ws


@pytest.mark.parametrize('bits,k', [(16, None), (24, 4)])
def test_weighted_mean_of_survivors(bits, k):
  n = 7
  rng = np.random.default_rng(bits)
  rows = rng.uniform(-0.4, 0.4, size=(n, 8))
  weights = rng.integers(1, 5, n).astype(np.float32)
  alive = np.array([1, 1, 0, 1, 1, 1, 0])
  agg = factory.SecAggMeanFactory(bits, 0.5, k=k, max_clients=N, clip_range=2.0)
  process = agg.create(VALUE_TYPE, WEIGHT_TYPE)
  out = process.next(process.initialize(), *_inputs(rows, weights, alive, n))
  m = out.measurements['secagg']
  assert m['aborted'] == 0 and m['survivors'] == 5 and m['sampled'] == n
  got = np.concatenate([out.result['a'], out.result['b']])
  expected = np.average(rows[alive == 1], axis=0, weights=weights[alive == 1])
  # Stochastic rounding: each client's y_i = w_i x_i is off by < one step 2r/L, L = floor((2^b - 1)/n).
  step = 2 * 2.0 / ((2**bits - 1) // n)
  np.testing.assert_allclose(got, expected, atol=len(rows) * step / weights[alive == 1].sum() + 1e-6)
  assert m['masked_bits'] == 8 * bits


def test_below_threshold_aborts_with_zeros():
  n = 6
  rows = np.full((n, 8), 0.3)
  process = aggregators.secagg_mean(16, 0.8, max_clients=N).create(VALUE_TYPE, WEIGHT_TYPE)
  out = process.next(process.initialize(), *_inputs(rows, np.ones(n), np.array([1, 1, 0, 1, 1, 0]), n))
  assert out.measurements['secagg']['aborted'] == 1 and out.measurements['secagg']['threshold'] == 5
  assert not np.any(out.result['a']) and not np.any(out.result['b'])


def test_plain_float_weight_is_refused():
  with pytest.raises(TypeError, match='SecAggInput'):
    aggregators.secagg_plus_mean(16, 0.5, 4, max_clients=N).create(VALUE_TYPE, tff.TensorType(np.float32))
