"""Packs a cohort's client data into padded tensors, in exactly the order `Task.train_dataset` would yield it.

`Task.train_dataset(cid, epochs=E, batch_size=B, seed=s, round_num=r)` is
`from_tensor_slices(x, y).shuffle(n, seed=derived_seed(s, r, cid), reshuffle_each_iteration=True).repeat(E).batch(B)`.
Building and serialising one such `tf.data` graph per client per round is what makes stock TFF slow for small
clients. Here the shuffle orders of the whole cohort come from ONE `tf.data` pipeline (the same `ShuffleDatasetV3`
op with the same (graph seed, op seed) pair, so the permutations are bit-identical), and the examples are gathered
with numpy into one group tensor per CLIENTS slot:

  OrderedDict(x=[C_g, L_max, *feature_shape] float32, y=[C_g, L_max] int32, n=[C_g] int32)

where row c holds client c's E * n_c examples in training order (padding after `n[c]` is never read). Batches are
rows[c, k*B : min((k+1)*B, n[c])], i.e. batches run across epoch boundaries exactly like `.repeat(E).batch(B)`.
"""

import collections
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import random_seed as tf_random_seed  # pylint: disable=g-direct-tensorflow-import

from tff_fl import tasks as tasks_lib

_MAXINT32 = 2**31 - 1


@tf.function(input_signature=[tf.TensorSpec([None], tf.int64)] * 3 + [tf.TensorSpec([], tf.int64)])
def _concatenated_orders(sizes, seeds, seeds2, epochs):
  """Concatenation over clients of `range(n).shuffle(n, reshuffle_each_iteration=True).repeat(epochs)`."""

  def one_client(n, seed, seed2):
    ds = tf.data.Dataset.range(n)
    shuffled = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(ds), buffer_size=n, seed=seed, seed2=seed2,
        seed_generator=tf.raw_ops.DummySeedGenerator(), output_types=[tf.int64], output_shapes=[[]],
        reshuffle_each_iteration=True)
    return tf.data.experimental.from_variant(shuffled, tf.TensorSpec([], tf.int64)).repeat(epochs)

  ds = tf.data.Dataset.from_tensor_slices((sizes, seeds, seeds2)).flat_map(one_client)
  return ds.batch(_MAXINT32).get_single_element()


def shuffle_orders(sizes: Sequence[int], op_seeds: Sequence[int], epochs: int) -> list[np.ndarray]:
  """Per client: the indices `tf.data.Dataset.range(n).shuffle(n, seed=op_seed, reshuffle_each_iteration=True)
  .repeat(epochs)` yields when built eagerly now (TF's global seed is honoured as `Dataset.shuffle` does)."""
  if epochs < 1:
    raise ValueError(f'epochs must be >= 1; got {epochs}.')
  if not sizes:
    return []
  graph_seed, _ = tf_random_seed.get_seed(1)  # (global seed or TF's default graph seed, op seed)
  graph_seed = 0 if graph_seed is None else graph_seed % _MAXINT32
  seeds2 = np.array([s % _MAXINT32 for s in op_seeds], np.int64)
  seeds2 = np.where((graph_seed == 0) & (seeds2 == 0), _MAXINT32, seeds2)  # Dataset.shuffle's (0, 0) rule.
  flat = _concatenated_orders(tf.constant(np.asarray(sizes, np.int64)),
                              tf.constant(np.full(len(sizes), graph_seed, np.int64)), tf.constant(seeds2),
                              tf.constant(epochs, tf.int64)).numpy()
  return np.split(flat, np.cumsum([n * epochs for n in sizes])[:-1])


def pack(arrays: Sequence[tuple[np.ndarray, np.ndarray]], orders: Sequence[np.ndarray]) -> collections.OrderedDict:
  """One group tensor from clients' (x [n, ...], y [n]) and their example orders (indices into each client)."""
  lengths = np.array([len(o) for o in orders], np.int32)
  max_len = int(lengths.max())
  x0, y0 = arrays[0]
  x = np.zeros((len(arrays), max_len) + x0.shape[1:], x0.dtype)
  y = np.zeros((len(arrays), max_len), y0.dtype)
  for c, ((xc, yc), order) in enumerate(zip(arrays, orders)):
    x[c, :len(order)] = xc[order]
    y[c, :len(order)] = yc[order]
  return collections.OrderedDict(x=x, y=y, n=lengths)


def split(num_clients: int, num_groups: int) -> list[slice]:
  """Contiguous, near-equal slices of the cohort, one per CLIENTS slot (fewer if the cohort is smaller)."""
  if num_groups < 1:
    raise ValueError(f'num_groups must be >= 1; got {num_groups}.')
  bounds = np.linspace(0, num_clients, min(num_groups, num_clients) + 1).round().astype(int)
  return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def build_client_inputs_fn(task: tasks_lib.Task, *, epochs: int, seed: int, num_groups: int = 1,
                           arrays: Optional[dict] = None) -> Callable[[int, Sequence[str]], list]:
  """`(round_num, client_ids) -> [group tensors]` for the fast engine: the examples, in the order, that
  `training_loop.default_client_inputs` gives the stock engine (the engine batches them). `arrays` overrides
  `task.data.train` ({client id: (x, y)})."""
  arrays = task.data.train if arrays is None else arrays

  def client_inputs(round_num: int, client_ids: Sequence[str]) -> list:
    client_ids = list(client_ids)
    sizes = [len(arrays[c][1]) for c in client_ids]
    orders = shuffle_orders(sizes, [tasks_lib.derived_seed(seed, round_num, c) for c in client_ids], epochs)
    return [pack([arrays[c] for c in client_ids[s]], orders[s]) for s in split(len(client_ids), num_groups)]

  return client_inputs
