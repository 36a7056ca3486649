"""NIID-Bench's partitions (`label_dirichlet`, `label_quantity`, `quantity_skew`) against their definitions.

Each is checked (a) against a line-by-line numpy transcription of NIID-Bench's `utils.partition_data` branch (lists,
python loops, the same draws in the same order from one `np.random.Generator`) and (b) against the properties the
paper states, which do not depend on the draw order.
"""

import random

import numpy as np
import pytest

from tff_fl.data import partition
from tff_fl.data import sources


def _labels(n_per_class=(300, 50, 200, 120, 80, 400, 30, 150, 260, 90), seed=3):
  labels = np.concatenate([np.full(n, k, np.int32) for k, n in enumerate(n_per_class)])
  return np.random.default_rng(seed).permutation(labels)


def _reference_labeldir(y_train, n_parties, beta, seed, min_require_size=10):
  """NIID-Bench `noniid-labeldir`, transcribed; np.random.* -> rng.*; parties' lists returned sorted."""
  rng, N, K = np.random.default_rng(seed), y_train.shape[0], 10
  min_size = 0
  while min_size < min_require_size:
    idx_batch = [[] for _ in range(n_parties)]
    for k in range(K):
      idx_k = np.where(y_train == k)[0]
      idx_k = rng.permutation(idx_k)
      proportions = rng.dirichlet(np.repeat(beta, n_parties))
      proportions = np.array([p * (len(idx_j) < N / n_parties) for p, idx_j in zip(proportions, idx_batch)])
      proportions = proportions / proportions.sum()
      proportions = (np.cumsum(proportions) * len(idx_k)).astype(int)[:-1]
      idx_batch = [idx_j + idx.tolist() for idx_j, idx in zip(idx_batch, np.split(idx_k, proportions))]
      min_size = min([len(idx_j) for idx_j in idx_batch])
  return [sorted(b) for b in idx_batch]


def _reference_quantity(n_train, n_parties, beta, seed):
  """NIID-Bench `iid-diff-quantity`, transcribed."""
  rng = np.random.default_rng(seed)
  idxs = rng.permutation(n_train)
  min_size = 0
  while min_size < 10:
    proportions = rng.dirichlet(np.repeat(beta, n_parties))
    proportions = proportions / proportions.sum()
    min_size = np.min(proportions * len(idxs))
  proportions = (np.cumsum(proportions) * len(idxs)).astype(int)[:-1]
  return np.split(idxs, proportions)


def _check_disjoint(parts, n=None):
  everything = np.concatenate(parts)
  assert len(np.unique(everything)) == everything.size
  if n is not None:
    np.testing.assert_array_equal(np.sort(everything), np.arange(n))


@pytest.mark.parametrize('beta,seed', [(0.5, 0), (0.1, 1), (5.0, 2)])
def test_label_dirichlet_equals_transcribed_niid_bench(beta, seed):
  y = _labels()
  got = partition.label_dirichlet(y, 10, beta, seed)
  want = _reference_labeldir(y, 10, beta, seed)
  assert [p.tolist() for p in got] == want
  _check_disjoint(got, y.size)
  assert min(p.size for p in got) >= 10


def test_label_dirichlet_caps_parties_at_n_over_parties():
  """A party holding >= N/n examples before class k gets none of class k (replayed class by class)."""
  y, n = _labels(), 10
  parts = partition.label_dirichlet(y, n, 0.3, seed=4)
  owner = np.full(y.size, -1)
  for i, p in enumerate(parts):
    owner[p] = i
  held = np.zeros(n)
  for k in range(10):
    full_before = held >= y.size / n
    got_k = np.bincount(owner[y == k], minlength=n)
    assert not np.any(got_k[full_before])
    held += got_k


def test_label_quantity_properties():
  y, n, k = _labels(), 10, 3
  parts = partition.label_quantity(y, n, k, seed=5)
  _check_disjoint(parts)
  holders = {c: [] for c in range(10)}
  for i, p in enumerate(parts):
    labels = set(np.unique(y[p]).tolist())
    assert len(labels) == k and i % 10 in labels
    for c in labels:
      holders[c].append(i)
  for c, who in holders.items():
    sizes = [int(np.sum(y[parts[i]] == c)) for i in who]
    assert sum(sizes) == int(np.sum(y == c))  # Every example of a held label is dealt ...
    assert max(sizes) - min(sizes) <= 1  # ... equally among its holders.


def test_label_quantity_k1_is_label_i_mod_10_and_extra_labels_uniform():
  y = _labels()
  parts = partition.label_quantity(y, 20, 1, seed=0)
  assert [np.unique(y[p]).tolist() for p in parts] == [[i % 10] for i in range(20)]
  # #C=2: the extra label of client 0 is uniform over the 9 others (NIID-Bench's rejection sampling).
  extra = [sorted(set(np.unique(y[partition.label_quantity(y, 10, 2, seed=s)[0]]).tolist()) - {0})[0]
           for s in range(900)]
  counts = np.bincount(extra, minlength=10)
  assert counts[0] == 0 and counts[1:].min() > 60 and counts[1:].max() < 140  # ~100 each.


def test_label_quantity_with_all_labels_matches_niid_bench_split():
  """k = K: NIID-Bench's special case splits each label with array_split over all parties."""
  y = _labels()
  parts = partition.label_quantity(y, 10, 10, seed=1)
  for c in range(10):
    sizes = [int(np.sum(y[p] == c)) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize('beta,seed', [(0.5, 0), (2.0, 3)])
def test_quantity_skew_equals_transcribed_niid_bench(beta, seed):
  got = partition.quantity_skew(2000, 10, beta, seed)
  want = _reference_quantity(2000, 10, beta, seed)
  assert [p.tolist() for p in got] == [sorted(w.tolist()) for w in want]
  _check_disjoint(got, 2000)
  sizes = np.array([p.size for p in got])
  assert sizes.min() >= 9 and sizes.std() > 0


def test_seeded_and_dispatched_by_name():
  data = sources.ArrayData(np.zeros((_labels().size, 2), np.float32), _labels())
  for name, kwargs in (('label_dirichlet', {}), ('label_quantity', {'labels_per_client': 2}),
                       ('quantity_skew', {})):
    ids, a = partition.partition(name, data, 10, 7, **kwargs)
    _, b = partition.partition(name, data, 10, 7, **kwargs)
    _, c = partition.partition(name, data, 10, 8, **kwargs)
    assert len(ids) == 10 and all(np.array_equal(x, z) for x, z in zip(a, b))
    assert not all(np.array_equal(x, z) for x, z in zip(a, c))


@pytest.mark.parametrize('call,match', [
    (lambda y: partition.label_quantity(y, 10, 11, 0), r'^labels_per_client must be an integer in \[1, 10\]'),
    (lambda y: partition.label_quantity(y, 10, 0, 0), '^labels_per_client'),
    (lambda y: partition.label_quantity(y[:5], 5, 2, 0), '^labels_per_client=2 with num_clients=5'),  # too few examples of a label
    (lambda y: partition.label_dirichlet(y, 10, 0.0, 0), '^dirichlet_alpha must be'),
    (lambda y: partition.label_dirichlet(y, 10, -1.0, 0), '^dirichlet_alpha must be'),
    (lambda y: partition.label_dirichlet(y[:150], 10, 0.01, 0), '^partition=label_dirichlet .* in 100 draws; raise dirichlet_alpha or lower num_clients'),
    (lambda y: partition.label_dirichlet(y[:50], 10, 0.5, 0), 'num_clients=10 x 10 exceeds'),
    (lambda y: partition.quantity_skew(200, 10, 0.05, 0), '^partition=quantity_skew .* in 100 draws'),
    (lambda y: partition.quantity_skew(2000, 10, float('nan'), 0), '^dirichlet_alpha must be'),
])
def test_impossible_inputs_are_one_line_errors_naming_the_argument(call, match):
  with pytest.raises(ValueError, match=match) as info:
    call(_labels())
  assert '\n' not in str(info.value)
