"""FlatSplit / FlatFederatedArrays against dict-of-arrays references; resampled populations."""

import numpy as np
import pytest

from tff_fl.data import client_data
from tff_fl.data import flat_arrays


def _reference(seed=0, num_clients=7, with_index=True):
  """A FlatSplit and the dict it must equal (clients of 0..5 examples, ids out of numeric order)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(40, 3, 2)).astype(np.float32)
  y = rng.integers(0, 5, 40).astype(np.int32)
  counts = rng.integers(0, 6, num_clients)
  ids = np.array(sorted(f'c{i}' for i in rng.permutation(100)[:num_clients]))
  offsets = np.concatenate([[0], np.cumsum(counts)])
  index = rng.integers(0, 40, offsets[-1]) if with_index else None
  if not with_index:
    x, y = x[:offsets[-1]], y[:offsets[-1]]
  rows = lambda k: (index[offsets[k]:offsets[k + 1]] if with_index else np.arange(offsets[k], offsets[k + 1]))
  ref = {c: (x[rows(k)], y[rows(k)]) for k, c in enumerate(ids)}
  return flat_arrays.FlatSplit(ids, x, y, offsets, index), ref


@pytest.mark.parametrize('with_index', [True, False])
def test_flat_split_is_the_dict(with_index):
  split, ref = _reference(with_index=with_index)
  assert list(split) == sorted(ref) and len(split) == len(ref)
  for c, (x, y) in ref.items():
    np.testing.assert_array_equal(split[c][0], x)
    np.testing.assert_array_equal(split[c][1], y)
    assert split.num_examples_of(c) == len(y) and c in split
  assert 'nope' not in split
  with pytest.raises(KeyError):
    split['nope']  # pylint: disable=pointless-statement


@pytest.mark.parametrize('with_index', [True, False])
def test_rows_of_any_positions_concatenate_the_clients(with_index):
  split, ref = _reference(seed=3, with_index=with_index)
  ids = list(ref)
  for wanted in ([ids[4], ids[1], ids[1], ids[6]], ids[2:5], []):
    pos = split.positions(wanted)
    assert [ids[p] for p in pos] == wanted
    x, y, counts = split.rows(pos)
    np.testing.assert_array_equal(counts, [len(ref[c][1]) for c in wanted])
    np.testing.assert_array_equal(y, np.concatenate([ref[c][1] for c in wanted] + [np.zeros(0, np.int32)]))
    assert x.shape[0] == y.shape[0]
    if wanted:
      np.testing.assert_array_equal(x, np.concatenate([ref[c][0] for c in wanted]))
  with pytest.raises(KeyError, match='zz'):
    split.positions([ids[0], 'zz'])


def test_bad_layouts_are_refused():
  ids, x, y = np.array(['a', 'b']), np.zeros((3, 1)), np.zeros(3)
  with pytest.raises(ValueError, match='offsets'):
    flat_arrays.FlatSplit(ids, x, y, [0, 2, 1])
  with pytest.raises(ValueError, match='offsets'):
    flat_arrays.FlatSplit(ids, x, y, [0, 1, 2])  # Ends before the 3 rows.
  with pytest.raises(ValueError, match='sorted'):
    flat_arrays.FlatSplit(np.array(['b', 'a']), x, y, [0, 1, 3])
  with pytest.raises(ValueError, match='as many rows'):
    flat_arrays.FlatSplit(ids, np.zeros((2, 1)), y, [0, 1, 3])


def test_federated_arrays_match_the_dict_based_class():
  train, train_ref = _reference(seed=1)
  train.offsets = np.arange(len(train) + 1) * 2  # Every client >= 1 train example.
  train.index = np.arange(2 * len(train)) % 40
  train_ref = {c: train[c] for c in train}
  test, test_ref = _reference(seed=1)
  flat = flat_arrays.FlatFederatedArrays.from_splits(train, test, num_classes=5)
  ref = client_data.FederatedArrays(list(train_ref), train_ref, test_ref, num_classes=5)
  assert list(flat.client_ids) == ref.client_ids and flat.client_ids[2] == ref.client_ids[2]
  assert flat.num_examples('train') == ref.num_examples('train')
  assert flat.num_examples('test') == ref.num_examples('test')
  for a, b in zip(flat.centralized('test'), ref.centralized('test')):
    np.testing.assert_array_equal(a, b)
  assert flat.element_spec == ref.element_spec


def test_resampled_population_is_seeded_and_draws_from_the_source():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 4)).astype(np.float32)
  y = np.arange(50) % 10
  make = lambda seed: flat_arrays.resampled(x, y, x[:20], y[:20], num_clients=1000, examples_per_client=10,
                                            test_examples_per_client=2, num_classes=10, seed=seed)
  a, b, c = make(0), make(0), make(1)
  assert len(a.client_ids) == 1000 and a.client_ids[0] == '000' and a.client_ids[-1] == '999'
  assert set(a.num_examples('train').values()) == {10} and set(a.num_examples('test').values()) == {2}
  np.testing.assert_array_equal(a.train.index, b.train.index)
  assert not np.array_equal(a.train.index, c.train.index)
  cx, cy = a.train['123']
  np.testing.assert_array_equal(cx, x[a.train.index[1230:1240]])
  np.testing.assert_array_equal(cy, y[a.train.index[1230:1240]])
  assert a.test.index.max() < 20
  counts = np.bincount(a.train.index, minlength=50)  # With replacement, uniform: every row used ~200 times.
  assert counts.min() > 120 and counts.max() < 290
