"""Per-client numpy arrays and their `tff.simulation.datasets.ClientData` view.

`FederatedArrays` holds each simulated client's train/test split in memory. `train_client_data()` /
`test_client_data()` expose them as stock TFF `ClientData` whose datasets are built from in-memory tensors (no file
IO) and yield unbatched `OrderedDict(x=..., y=...)` elements; batching/shuffling is the preprocess stage's job.
"""

import collections
import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.data import sources

_SPLITS = ('train', 'test')


def _make_client_data(client_ids: list[str], arrays: dict[str, tuple[np.ndarray, np.ndarray]]):
  """ClientData over `arrays[cid] = (x, y)`; traceable with a tf.string client id as TFF requires."""
  ids = list(client_ids)
  xs = [arrays[c][0] for c in ids]
  ys = [arrays[c][1] for c in ids]
  sizes = np.array([y.shape[0] for y in ys], dtype=np.int64)
  offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
  all_x = np.concatenate(xs, axis=0)
  all_y = np.concatenate(ys, axis=0)

  def serializable_dataset_fn(cid) -> tf.data.Dataset:
    if isinstance(cid, (str, bytes)):  # Eager fast path: slice only this client's arrays.
      key = cid.decode() if isinstance(cid, bytes) else cid
      x, y = arrays[key]
      return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y))
    # Traced path (tf.function / tff.tensorflow.computation): look the id up among constant tensors.
    i = tf.reshape(tf.where(tf.equal(tf.constant(ids), cid)), [])  # Fails unless exactly one id matches.
    start, size = tf.gather(tf.constant(offsets), i), tf.gather(tf.constant(sizes), i)
    x = tf.slice(tf.constant(all_x), tf.concat([[start], tf.zeros([all_x.ndim - 1], tf.int64)], 0),
                 tf.concat([[size], tf.constant(all_x.shape[1:], tf.int64)], 0))
    y = tf.slice(tf.constant(all_y), [start], [size])
    x = tf.ensure_shape(x, (None,) + all_x.shape[1:])
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y))

  return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(ids, serializable_dataset_fn)


@dataclasses.dataclass
class FederatedArrays:
  """Per-client numpy arrays. Invariant: client_ids sorted order is the canonical order; every client has >= 1 train
  example; train[c] = (x [n_c, ...] float32, y [n_c] int32), test[c] likewise (may have 0 rows only if
  test_fraction=0 or the client has a single example)."""

  client_ids: list[str]
  train: dict[str, tuple[np.ndarray, np.ndarray]]
  test: dict[str, tuple[np.ndarray, np.ndarray]]
  num_classes: int

  def __post_init__(self):
    self.client_ids = sorted(self.client_ids)
    if not self.client_ids:
      raise ValueError('FederatedArrays needs at least one client')
    for cid in self.client_ids:
      if cid not in self.train or cid not in self.test:
        raise ValueError(f'client {cid!r} is missing from the train or test arrays')
      if self.train[cid][1].shape[0] < 1:
        raise ValueError(f'client {cid!r} has no train examples')

  def _split(self, split: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if split not in _SPLITS:
      raise ValueError(f'split must be one of {", ".join(_SPLITS)}; got {split!r}')
    return self.train if split == 'train' else self.test

  def train_client_data(self) -> tff.simulation.datasets.ClientData:
    """ClientData over every client's train split; elements OrderedDict(x=[...] float32, y=[] int32), unbatched."""
    return _make_client_data(self.client_ids, self.train)

  def test_client_data(self) -> tff.simulation.datasets.ClientData:
    """ClientData over the clients that have >= 1 test example (ValueError if none has)."""
    ids = [c for c in self.client_ids if self.test[c][1].shape[0] > 0]
    if not ids:
      raise ValueError('no client has test examples (was test_fraction 0?)')
    return _make_client_data(ids, self.test)

  def num_examples(self, split: str = 'train') -> dict[str, int]:
    arrays = self._split(split)
    return {c: int(arrays[c][1].shape[0]) for c in self.client_ids}

  def centralized(self, split: str = 'test') -> tuple[np.ndarray, np.ndarray]:
    """All clients' `split` examples concatenated in canonical client order: (x [N, ...], y [N])."""
    arrays = self._split(split)
    return (np.concatenate([arrays[c][0] for c in self.client_ids], axis=0),
            np.concatenate([arrays[c][1] for c in self.client_ids], axis=0))

  @property
  def element_spec(self) -> collections.OrderedDict:
    """tf.TensorSpec structure of one unbatched example."""
    x = self.train[self.client_ids[0]][0]
    return collections.OrderedDict(
        x=tf.TensorSpec(shape=x.shape[1:], dtype=tf.float32), y=tf.TensorSpec(shape=(), dtype=tf.int32))


def _num_train(n: int, test_fraction: float) -> int:
  """floor((1 - f) * n) as in FedProx's int(0.9 * n), kept in [1, n - 1] when f > 0 and n >= 2."""
  n_train = int((1.0 - test_fraction) * n)
  if test_fraction > 0 and n >= 2:
    return min(max(n_train, 1), n - 1)
  return max(n_train, 1)


def from_client_arrays(
    arrays: dict[str, tuple[np.ndarray, np.ndarray]], test_fraction: float, seed: int, num_classes: int
) -> FederatedArrays:
  """Shuffles each client's (x, y) (seeded; clients visited in sorted id order) and splits it train/test."""
  if not 0.0 <= test_fraction < 1.0:
    raise ValueError(f'test_fraction must be in [0, 1); got {test_fraction!r}.')
  rng = np.random.default_rng(seed)
  train, test = {}, {}
  for cid in sorted(arrays):
    x, y = np.asarray(arrays[cid][0], np.float32), np.asarray(arrays[cid][1])
    if y.ndim != 1 or x.shape[:1] != y.shape:
      raise ValueError(f'client {cid!r}: x {x.shape} and y {y.shape} must share the leading dimension')
    if y.size == 0:
      raise ValueError(f'client {cid!r} has no data')
    perm = rng.permutation(y.size)
    x, y = x[perm], y[perm].astype(np.int32)
    n_train = _num_train(y.size, test_fraction)
    train[cid], test[cid] = (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
  return FederatedArrays(client_ids=sorted(arrays), train=train, test=test, num_classes=num_classes)


def from_partition(
    data: sources.ArrayData, client_ids: list[str], parts: list[np.ndarray], test_fraction: float = 0.2,
    seed: int = 0
) -> FederatedArrays:
  """Builds clients from partition indices; each client's examples are shuffled (seeded) then split train/test."""
  if len(client_ids) != len(parts):
    raise ValueError(f'got {len(client_ids)} client ids but {len(parts)} index arrays')
  if len(set(client_ids)) != len(client_ids):
    raise ValueError('client ids must be distinct')
  for cid, idx in zip(client_ids, parts):
    if np.asarray(idx).size == 0:
      raise ValueError(f'client {cid!r} has no data')
  arrays = {cid: (data.x[idx], data.y[idx]) for cid, idx in zip(client_ids, parts)}
  return from_client_arrays(arrays, test_fraction=test_fraction, seed=seed, num_classes=data.num_classes)
