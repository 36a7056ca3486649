"""Robust aggregators vs independent references: scipy.stats.trim_mean, numpy.median, a numpy Krum."""

import collections

import numpy as np
import pytest
from scipy import stats
import tensorflow_federated as tff

from tff_fl.aggregators import robust

VALUE_TYPE = tff.to_type(collections.OrderedDict(
    w=tff.TensorType(np.float32, [3, 2]), b=[tff.TensorType(np.float32, [4])]))
WEIGHT_TYPE = tff.TensorType(np.float32)
D = 10


def _structs(rows):
  """Client values of VALUE_TYPE from a [n, 10] array (leaf order w then b)."""
  return [collections.OrderedDict(w=r[:6].reshape(3, 2).astype(np.float32), b=[r[6:].astype(np.float32)])
          for r in rows]


def _flat(value):
  return np.concatenate([value['w'].ravel(), value['b'][0].ravel()])


def _numpy_krum(rows, f, m):
  """Blanchard et al. 2017: score = sum of squared distances to the n-f-2 nearest others; mean of m best."""
  rows = rows.astype(np.float64)
  n = len(rows)
  dist = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(-1)
  scores = np.array([np.sort(np.delete(dist[i], i))[:n - f - 2].sum() for i in range(n)])
  chosen = np.argsort(scores, kind='stable')[:m]
  return rows[chosen].mean(0), chosen, scores[chosen]


def _client_rows(kind, n, seed):
  rng = np.random.default_rng(seed)
  if kind == 'random':
    return rng.normal(size=(n, D)).astype(np.float32)
  if kind == 'ties':  # Few distinct values per coordinate: many exact ties.
    return rng.integers(-2, 3, size=(n, D)).astype(np.float32)
  return np.full((n, D), 0.75, np.float32)  # all equal


def _run(factory, rows):
  process = factory.create(VALUE_TYPE, WEIGHT_TYPE)
  return process.next(process.initialize(), _structs(rows), [1.0] * len(rows))


@pytest.mark.parametrize('factory,extra', [
    (robust.trimmed_mean(0.2), collections.OrderedDict(trimmed_count=np.int32)),
    (robust.median(), collections.OrderedDict()),
    (robust.krum(1), collections.OrderedDict(selected_indices=tff.TensorType(np.int32, [1]),
                                             selected_scores=tff.TensorType(np.float32, [1]))),
    (robust.multi_krum(1, 3), collections.OrderedDict(selected_indices=tff.TensorType(np.int32, [3]),
                                                      selected_scores=tff.TensorType(np.float32, [3]))),
])
def test_type_signatures(factory, extra):
  process = factory.create(VALUE_TYPE, WEIGHT_TYPE)
  assert isinstance(factory, tff.aggregators.WeightedAggregationFactory)
  server_unit = tff.FederatedType((), tff.SERVER)
  assert process.initialize.type_signature.result == server_unit
  expected_next = tff.FunctionType(
      parameter=collections.OrderedDict(state=server_unit, value=tff.FederatedType(VALUE_TYPE, tff.CLIENTS),
                                        weight=tff.FederatedType(WEIGHT_TYPE, tff.CLIENTS)),
      result=tff.templates.MeasuredProcessOutput(
          state=server_unit, result=tff.FederatedType(VALUE_TYPE, tff.SERVER),
          measurements=tff.FederatedType(collections.OrderedDict(cohort_size=np.int32, **extra), tff.SERVER)))
  process.next.type_signature.check_equivalent_to(expected_next)


@pytest.mark.parametrize('kind', ['random', 'ties', 'all_equal'])
@pytest.mark.parametrize('n', [7, 10])
def test_trimmed_mean_and_median_match_scipy_numpy(kind, n):
  rows = _client_rows(kind, n, seed=n)
  out = _run(robust.trimmed_mean(0.2), rows)
  np.testing.assert_allclose(_flat(out.result), stats.trim_mean(rows, 0.2, axis=0), rtol=1e-6, atol=1e-6)
  assert out.measurements['trimmed_count'] == 2 * int(0.2 * n)
  assert out.measurements['cohort_size'] == n
  out = _run(robust.median(), rows)
  np.testing.assert_allclose(_flat(out.result), np.median(rows, axis=0), rtol=1e-6, atol=1e-6)


def test_trimmed_mean_weights_are_ignored():
  rows = _client_rows('random', 5, seed=1)
  process = robust.trimmed_mean(0.2).create(VALUE_TYPE, WEIGHT_TYPE)
  out = process.next(process.initialize(), _structs(rows), [1.0, 100.0, 0.0, 3.0, 7.0])
  np.testing.assert_allclose(_flat(out.result), stats.trim_mean(rows, 0.2, axis=0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('kind', ['random', 'ties', 'all_equal'])
@pytest.mark.parametrize('f,m', [(2, 1), (1, 3)])
def test_krum_matches_numpy(kind, f, m):
  rows = _client_rows(kind, 8, seed=3)
  if kind == 'random':  # Two far-away attackers must never be chosen.
    rows[[2, 5]] += 50.0
  expected, chosen, scores = _numpy_krum(rows, f, m)
  out = _run(robust.multi_krum(f, m), rows)
  np.testing.assert_allclose(_flat(out.result), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(out.measurements['selected_indices'], chosen)
  np.testing.assert_allclose(out.measurements['selected_scores'], scores, rtol=1e-5, atol=1e-5)
  if kind == 'random':
    assert not {2, 5} & set(out.measurements['selected_indices'].tolist())


@pytest.mark.parametrize('make,n,match', [
    (lambda n: robust.krum(2, cohort_size=n), 6, r'n > 2f\+2 = 6'),
    (lambda n: robust.multi_krum(1, 5, cohort_size=n), 5, r'm <= n - f'),
    (lambda n: robust.trimmed_mean(0.1, cohort_size=n), 9, r'floor\(beta\*n\) >= 1, i.e. n >= 10'),
])
def test_cohort_too_small_is_a_value_error(make, n, match):
  with pytest.raises(ValueError, match=match):
    make(n)
  make(n + 1)  # One more client is enough.


def test_cohort_too_small_at_run_time_names_the_requirement():
  with pytest.raises(Exception, match=r'krum\(f=2, m=1\) needs n > 2f\+2'):
    _run(robust.krum(2), _client_rows('random', 6, seed=0))


@pytest.mark.parametrize('bad', [lambda: robust.trimmed_mean(0.5), lambda: robust.trimmed_mean(-0.1),
                                 lambda: robust.krum(-1), lambda: robust.multi_krum(1, 0),
                                 lambda: robust.krum(1.5)])
def test_bad_parameters(bad):
  with pytest.raises(ValueError):
    bad()
