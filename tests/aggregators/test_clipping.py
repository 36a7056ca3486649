"""Clipping/zeroing constructors: numerics vs numpy, nesting with TFF factories both ways, adaptive norm."""

import collections
import math

import numpy as np
import pytest
from scipy import stats
import tensorflow_federated as tff

from tff_fl.aggregators import clipping
from tff_fl.aggregators import robust

VALUE_TYPE = tff.to_type(collections.OrderedDict(a=tff.TensorType(np.float32, [4]), b=tff.TensorType(np.float32, [2])))
WEIGHT_TYPE = tff.TensorType(np.float32)


def _clients(n, seed):
  rows = np.random.default_rng(seed).normal(scale=2.0, size=(n, 6)).astype(np.float32)
  return rows, [collections.OrderedDict(a=r[:4], b=r[4:]) for r in rows]


def _flat(value):
  return np.concatenate([value['a'], value['b']])


def _np_clip(rows, norm):
  norms = np.linalg.norm(rows, axis=1, keepdims=True)
  return rows * np.minimum(1.0, norm / norms)


def test_clip_wrapping_our_trimmed_mean_matches_numpy():
  rows, clients = _clients(10, seed=0)
  factory = clipping.clip(norm=1.0, inner=robust.trimmed_mean(beta=0.1))
  process = factory.create(VALUE_TYPE, WEIGHT_TYPE)
  out = process.next(process.initialize(), clients, [1.0] * 10)
  np.testing.assert_allclose(_flat(out.result), stats.trim_mean(_np_clip(rows, 1.0), 0.1, axis=0), atol=1e-6)
  assert out.measurements['clipped_count'] == int(np.sum(np.linalg.norm(rows, axis=1) > 1.0))
  assert out.measurements['clipping']['trimmed_count'] == 2


def test_tff_clipping_factory_wraps_our_median_and_ours_wraps_tff_mean():
  rows, clients = _clients(5, seed=1)
  weights = [1.0, 2.0, 3.0, 4.0, 5.0]
  outer_tff = tff.aggregators.clipping_factory(2.0, robust.median()).create(VALUE_TYPE, WEIGHT_TYPE)
  out = outer_tff.next(outer_tff.initialize(), clients, weights)
  np.testing.assert_allclose(_flat(out.result), np.median(_np_clip(rows, 2.0), axis=0), atol=1e-6)
  ours = clipping.clip(2.0, inner=tff.aggregators.MeanFactory()).create(VALUE_TYPE, WEIGHT_TYPE)
  out = ours.next(ours.initialize(), clients, weights)
  np.testing.assert_allclose(_flat(out.result), np.average(_np_clip(rows, 2.0), axis=0, weights=weights),
                             atol=1e-6)


def test_zeroing_matches_numpy():
  rows, clients = _clients(6, seed=2)
  norm = float(np.median(np.linalg.norm(rows, axis=1)))
  process = clipping.zeroing(norm, inner=tff.aggregators.UnweightedMeanFactory()).create(VALUE_TYPE)
  out = process.next(process.initialize(), clients)
  kept = np.where(np.linalg.norm(rows, axis=1, keepdims=True) > norm, 0.0, rows)
  np.testing.assert_allclose(_flat(out.result), kept.mean(0), atol=1e-6)
  assert out.measurements['zeroed_count'] == 3


def test_adaptive_clip_follows_geometric_quantile_update():
  # Andrew et al. 2021: C <- C * exp(-lr * (fraction of norms <= C - q)).
  clients = [collections.OrderedDict(a=np.full(4, 5.0, np.float32), b=np.zeros(2, np.float32))] * 4  # norm 10
  process = clipping.adaptive_clip(0.5, initial_norm=1.0, learning_rate=0.2).create(VALUE_TYPE, WEIGHT_TYPE)
  state = process.initialize()
  norms = []
  for _ in range(2):
    out = process.next(state, clients, [1.0] * 4)
    state = out.state
    norms.append(out.measurements['clipping_norm'])
  np.testing.assert_allclose(norms, [1.0, math.exp(0.2 * 0.5)], rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(_flat(out.result)), math.exp(0.1), rtol=1e-5)


@pytest.mark.parametrize('bad', [lambda: clipping.clip(0.0), lambda: clipping.clip(-1.0),
                                 lambda: clipping.adaptive_clip(1.0), lambda: clipping.zeroing('1'),
                                 lambda: clipping.adaptive_zeroing(0.0)])
def test_bad_parameters(bad):
  with pytest.raises(ValueError):
    bad()
