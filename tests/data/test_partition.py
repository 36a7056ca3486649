"""Tests for tff_fl.data.partition: coverage, disjointness, label skew, determinism and error messages."""

import numpy as np
import pytest

from tff_fl.data import partition
from tff_fl.data import sources


@pytest.fixture(scope='module')
def digits():
  return sources.load_digits()


def _label_hist(labels, idx, num_classes=10):
  return np.bincount(labels[idx], minlength=num_classes) / idx.size


def _mean_entropy(labels, parts):
  entropies = []
  for idx in parts:
    p = _label_hist(labels, idx)
    p = p[p > 0]
    entropies.append(-(p * np.log(p)).sum())
  return float(np.mean(entropies))


def _run(name, data, num_clients, seed, **kwargs):
  return partition.partition(name, data, num_clients, seed, **kwargs)


@pytest.mark.parametrize('name, kwargs', [('iid', {}), ('dirichlet', {'dirichlet_alpha': 0.3}),
                                          ('shards', {'shards_per_client': 3})])
def test_partition_covers_all_examples_disjointly(digits, name, kwargs):
  ids, parts = _run(name, digits, 12, seed=1, **kwargs)
  assert ids == sorted(ids) and len(set(ids)) == 12 and ids[7] == 'client_0007'
  assert all(p.dtype == np.int64 and p.size > 0 for p in parts)
  everything = np.concatenate(parts)
  assert everything.size == len(digits)  # Sizes sum to N and no index is repeated ...
  np.testing.assert_array_equal(np.sort(everything), np.arange(len(digits)))  # ... so the parts are disjoint.


@pytest.mark.parametrize('name, kwargs', [('iid', {}), ('dirichlet', {'dirichlet_alpha': 0.5}),
                                          ('shards', {'shards_per_client': 2})])
def test_partition_is_deterministic_in_seed(digits, name, kwargs):
  _, a = _run(name, digits, 8, seed=3, **kwargs)
  _, b = _run(name, digits, 8, seed=3, **kwargs)
  _, c = _run(name, digits, 8, seed=4, **kwargs)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_sizes_balanced_and_label_histograms_match_global(digits):
  parts = partition.iid(len(digits), 5, seed=0)
  sizes = [p.size for p in parts]
  assert max(sizes) - min(sizes) <= 1
  global_hist = _label_hist(digits.y, np.arange(len(digits)))
  for idx in parts:  # ~360 examples: sampling noise puts total variation near 0.07; skewed splits are ~0.6.
    assert 0.5 * np.abs(_label_hist(digits.y, idx) - global_hist).sum() < 0.15


def test_dirichlet_label_skew_grows_as_alpha_shrinks(digits):
  uniform_entropy = np.log(10)
  entropy = {a: _mean_entropy(digits.y, partition.dirichlet(digits.y, 10, a, seed=0)) for a in (0.1, 1.0, 100.0)}
  assert entropy[0.1] < entropy[1.0] < entropy[100.0]
  assert entropy[100.0] > 0.95 * uniform_entropy  # Nearly IID.
  assert entropy[0.1] < 0.6 * uniform_entropy  # Few labels per client.


def test_dirichlet_respects_min_examples(digits):
  parts = partition.dirichlet(digits.y, 40, 0.1, seed=2, min_examples=5)
  assert min(p.size for p in parts) >= 5


def test_dirichlet_gives_up_naming_its_arguments(digits):
  with pytest.raises(ValueError, match='^dirichlet_alpha=0.001 with num_clients=500'):
    partition.dirichlet(digits.y, 500, 0.001, seed=0)


def test_shards_each_client_sees_at_most_shards_per_client_labels():
  rng = np.random.default_rng(0)
  labels = rng.permutation(np.repeat(np.arange(10), 100))  # 10 clients x 2 shards of 50: shards never straddle.
  parts = partition.shards(labels, num_clients=10, shards_per_client=2, seed=5)
  assert all(p.size == 100 for p in parts)
  for idx in parts:
    assert np.unique(labels[idx]).size <= 2
    counts = np.bincount(labels[idx])
    assert set(counts[counts > 0]) <= {50, 100}  # Whole shards of one label each.
  assert sum(np.unique(labels[idx]).size for idx in parts) > 10  # Not every client got a single label twice.


def test_shards_on_digits_are_label_sorted_slices(digits):
  parts = partition.shards(digits.y, num_clients=50, shards_per_client=2, seed=0)
  # 100 shards of ~18 examples over classes of ~180: a shard spans at most 2 labels, so a client at most 4.
  assert max(np.unique(digits.y[idx]).size for idx in parts) <= 4
  assert np.mean([np.unique(digits.y[idx]).size for idx in parts]) < 3


def test_natural_one_client_per_group_in_sorted_string_order():
  groups = np.array([3, 1, 3, 10, 2, 1])
  ids, parts = partition.natural(groups)
  assert ids == ['1', '10', '2', '3']
  expected = {'1': [1, 5], '10': [3], '2': [4], '3': [0, 2]}
  for cid, idx in zip(ids, parts):
    np.testing.assert_array_equal(idx, expected[cid])


def test_natural_via_dispatcher_uses_groups():
  data = sources.ArrayData(x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), groups=np.array(['bob', 'al', 'bob', 'al']))
  ids, parts = partition.partition('natural', data, num_clients=99, seed=0)
  assert ids == ['al', 'bob']
  np.testing.assert_array_equal(parts[0], [1, 3])


def test_client_id_padding_keeps_string_order():
  ids = [partition.client_id(i, 12000) for i in range(12000)]
  assert ids == sorted(ids) and ids[5] == 'client_00005'


@pytest.mark.parametrize(
    'call, match',
    [
        (lambda d: partition.partition('pathological', d, 5, 0),
         r"^partition must be one of iid, dirichlet, shards, natural, label_dirichlet, label_quantity, quantity_skew; "
         r"got 'pathological'$"),
        (lambda d: partition.partition('natural', d, 5, 0), 'no natural client ids'),
        (lambda d: partition.iid(len(d), 0, 0), '^num_clients must be a positive integer'),
        (lambda d: partition.iid(10, 11, 0), '^num_clients=11 exceeds'),
        (lambda d: partition.dirichlet(d.y, 5, 0.0, 0), '^dirichlet_alpha must be a positive'),
        (lambda d: partition.dirichlet(d.y, 5, float('nan'), 0), '^dirichlet_alpha must be'),
        (lambda d: partition.shards(d.y, 5, 0, 0), '^shards_per_client must be a positive'),
        (lambda d: partition.shards(d.y, 1000, 2, 0), '2000 shards exceeds'),
        (lambda d: partition.dirichlet(d.y.astype(float), 5, 1.0, 0), 'integer'),
    ],
)
def test_bad_arguments_raise_value_error(digits, call, match):
  with pytest.raises(ValueError, match=match):
    call(digits)
