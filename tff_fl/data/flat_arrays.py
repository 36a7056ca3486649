"""Client data as one array per feature plus per-client offsets: populations of 10^6 clients without per-client
Python objects.

`FlatSplit` is a read-only Mapping client id -> (x, y) over shared arrays:

  x [R, ...], y [R, ...]      the rows (e.g. a whole source data set, shared by every client)
  index int64[T] or None      row of each client example (None: the identity, clients own consecutive rows of x/y)
  offsets int64[K + 1]        client k's examples are index[offsets[k]:offsets[k + 1]] (or rows offsets[k]:...)
  ids: numpy str [K], sorted  client k's id

`split[cid]` returns that client's (x, y) (views when `index` is None, a gather otherwise), so code written for
dicts keeps working; `positions(ids)` and `rows(positions)` are the vectorised forms the engine uses (one
`searchsorted` and one `take` per feature, whatever the number of clients). `FlatFederatedArrays` is a
`FederatedArrays` whose train/test are `FlatSplit`s over the same ids; `client_ids` is a `ClientIds` sequence backed
by the numpy id array (no list of 10^6 Python strings unless a caller asks for one).
"""

import collections
import dataclasses
from typing import Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf

from tff_fl.data import client_data as client_data_lib


class ClientIds(Sequence):
  """Sorted client ids backed by a numpy str array; behaves like the sorted list of `FederatedArrays.client_ids`."""

  def __init__(self, ids: np.ndarray):
    self.array = ids

  def __len__(self) -> int:
    return len(self.array)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [str(c) for c in self.array[i]]
    return str(self.array[i])

  def __iter__(self) -> Iterator[str]:
    return iter(self.array.tolist())

  def __eq__(self, other) -> bool:
    return list(self) == list(other)

  def __repr__(self) -> str:
    return f'ClientIds({len(self)} ids: {self[:3]}...)'


def client_id_array(num_clients: int) -> np.ndarray:
  """Sorted zero-padded ids '000000', '000001', ... (sorted string order == numeric order)."""
  width = max(1, len(str(num_clients - 1)))
  return np.char.zfill(np.arange(num_clients).astype(str), width)


class FlatSplit(collections.abc.Mapping):
  """Mapping client id -> (x, y) over shared arrays (module docstring). Invariant: ids sorted and distinct,
  offsets non-decreasing from 0 to len(index) (or len(y))."""

  def __init__(self, ids: np.ndarray, x: np.ndarray, y: np.ndarray, offsets: np.ndarray,
               index: Optional[np.ndarray] = None):
    ids, offsets = np.asarray(ids), np.asarray(offsets, np.int64)
    total = len(y) if index is None else len(index)
    if len(x) != len(y):
      raise ValueError(f'x and y must have as many rows; got {len(x)} and {len(y)}.')
    if offsets.shape != (len(ids) + 1,) or offsets[0] != 0 or offsets[-1] != total or np.any(np.diff(offsets) < 0):
      raise ValueError(f'offsets must be non-decreasing, of length num_clients + 1 = {len(ids) + 1}, from 0 to '
                       f'{total}.')
    if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
      raise ValueError('ids must be sorted and distinct.')
    self.ids, self.x, self.y, self.offsets = ids, x, y, offsets
    self.index = None if index is None else np.asarray(index, np.int64)

  @property
  def counts(self) -> np.ndarray:
    """int64[K] examples per client."""
    return np.diff(self.offsets)

  def positions(self, client_ids: Sequence[str]) -> np.ndarray:
    """int64 positions of `client_ids` (KeyError naming the first unknown id)."""
    wanted = np.asarray(client_ids.array if isinstance(client_ids, ClientIds) else list(client_ids),
                        dtype=self.ids.dtype if len(client_ids) else self.ids.dtype)
    pos = np.searchsorted(self.ids, wanted)
    bad = (pos >= len(self.ids)) | (self.ids[np.minimum(pos, len(self.ids) - 1)] != wanted)
    if np.any(bad):
      raise KeyError(str(np.asarray(client_ids)[np.argmax(bad)]))
    return pos.astype(np.int64)

  def row_index(self, positions: np.ndarray, within: Optional[np.ndarray] = None,
                owner: Optional[np.ndarray] = None) -> np.ndarray:
    """Rows of x/y: all examples of the clients at `positions` concatenated (within=None), or example `within[j]`
    of client positions[owner[j]] for each j."""
    positions = np.asarray(positions, np.int64)
    if within is None:
      counts = self.counts[positions]
      owner = np.repeat(np.arange(len(positions)), counts)
      within = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    flat = self.offsets[positions][owner] + np.asarray(within, np.int64)
    return flat if self.index is None else self.index[flat]

  def rows(self, positions: np.ndarray):
    """(x, y, counts) of the clients at `positions`, concatenated in that order (one take per feature)."""
    positions = np.asarray(positions, np.int64)
    counts = self.counts[positions]
    if self.index is None and len(positions) and np.array_equal(
        positions, np.arange(positions[0], positions[0] + len(positions))):
      lo, hi = self.offsets[positions[0]], self.offsets[positions[-1] + 1]
      return self.x[lo:hi], self.y[lo:hi], counts
    rows = self.row_index(positions)
    return self.x[rows], self.y[rows], counts

  def _position(self, cid: str) -> int:
    k = int(self.ids.searchsorted(cid))
    if k >= len(self.ids) or self.ids[k] != cid:
      raise KeyError(cid)
    return k

  def num_examples_of(self, cid: str) -> int:
    k = self._position(cid)
    return int(self.offsets[k + 1] - self.offsets[k])

  def __getitem__(self, cid: str):
    k = self._position(cid)
    lo, hi = self.offsets[k], self.offsets[k + 1]
    if self.index is None:
      return self.x[lo:hi], self.y[lo:hi]
    rows = self.index[lo:hi]
    return self.x[rows], self.y[rows]

  def __contains__(self, cid) -> bool:
    pos = np.searchsorted(self.ids, cid)
    return bool(pos < len(self.ids) and self.ids[pos] == cid)

  def __iter__(self) -> Iterator[str]:
    return iter(self.ids.tolist())

  def __len__(self) -> int:
    return len(self.ids)


@dataclasses.dataclass
class FlatFederatedArrays(client_data_lib.FederatedArrays):
  """`FederatedArrays` over `FlatSplit`s (train and test share `ids`); build with `from_splits`."""

  def __post_init__(self):
    if not isinstance(self.train, FlatSplit) or not isinstance(self.test, FlatSplit):
      raise ValueError('FlatFederatedArrays needs FlatSplit train and test.')
    if not np.array_equal(self.train.ids, self.test.ids):
      raise ValueError('train and test FlatSplits must hold the same client ids.')
    if not len(self.train):
      raise ValueError('FederatedArrays needs at least one client')
    if np.any(self.train.counts < 1):
      raise ValueError(f'client {self.train.ids[np.argmax(self.train.counts < 1)]!r} has no train examples')
    self.client_ids = ClientIds(self.train.ids)

  @classmethod
  def from_splits(cls, train: FlatSplit, test: FlatSplit, num_classes: int) -> 'FlatFederatedArrays':
    return cls(client_ids=ClientIds(train.ids), train=train, test=test, num_classes=num_classes)

  def num_examples(self, split: str = 'train') -> dict[str, int]:
    s = self._split(split)
    return dict(zip(s.ids.tolist(), s.counts.tolist()))

  def centralized(self, split: str = 'test') -> tuple[np.ndarray, np.ndarray]:
    s = self._split(split)
    x, y, _ = s.rows(np.arange(len(s)))
    return x, y

  @property
  def element_spec(self) -> collections.OrderedDict:
    return collections.OrderedDict(x=tf.TensorSpec(shape=self.train.x.shape[1:], dtype=tf.float32),
                                   y=tf.TensorSpec(shape=(), dtype=tf.int32))


def resampled(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
              num_clients: int, examples_per_client: int, test_examples_per_client: int, num_classes: int,
              seed: int) -> FlatFederatedArrays:
  """`num_clients` clients, each with `examples_per_client` train rows and `test_examples_per_client` test rows
  drawn uniformly with replacement (seeded) from the source arrays, which are shared, not copied: memory is
  O(rows of the source + 8 bytes per client example)."""
  if num_clients < 1 or examples_per_client < 1 or test_examples_per_client < 0:
    raise ValueError(f'num_clients and examples_per_client must be >= 1 and test_examples_per_client >= 0; got '
                     f'{num_clients}, {examples_per_client}, {test_examples_per_client}.')
  rng = np.random.default_rng([seed, 0x5eed])
  ids = client_id_array(num_clients)

  def split(x, y, per_client):
    if per_client and not len(y):
      raise ValueError('resampled: the source split has no rows.')
    index = rng.integers(0, max(len(y), 1), size=num_clients * per_client, dtype=np.int64)
    offsets = np.arange(num_clients + 1, dtype=np.int64) * per_client
    return FlatSplit(ids, np.asarray(x, np.float32), np.asarray(y, np.int32), offsets, index)

  return FlatFederatedArrays.from_splits(split(train_x, train_y, examples_per_client),
                                         split(test_x, test_y, test_examples_per_client), num_classes)
