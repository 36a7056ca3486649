"""A cohort's client data, client states and per-client fields packed as tensors, one group per CLIENTS slot.

`Cohort` is the one client-inputs type of the package: who was sampled, who reports and how many local steps each
reporter finished (dropouts and stragglers decide it). The `Packer` turns it into slot tensors, in exactly the
example order `Task.train_dataset` would yield (`order_fn`: E seeded permutations of the client's examples):

  OrderedDict(<data keys>: [C, M, ...] (x, y: each client's distinct rows once, padding never read),
              n: int32[C] examples to train on, order: int32[C, L] the row of x/y of each of the n examples in
              training order (E epochs; padding after n never read), seed: int32[C] per-client seed of this round,
              state: float32[C, S] flattened client states, info: OrderedDict(<extension field>: [C, ...]))

Rows are shipped once and addressed through `order`, so E local epochs cost E int32 indices per example rather than
E copies of it (10 epochs of 60k MNIST images would be 1.9 GB per round). `TensorBatches` then serves a client's
examples as batches of B gathered through `order` (a batch may span an epoch boundary, like the reference dataset's
`repeat(E).batch(B)`), with `.reduce` like `tf.data.Dataset`, so the one local-training loop runs unchanged.
"""

import collections
import dataclasses
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

OrderFn = Callable[[str, int], np.ndarray]  # (client_id, round_num) -> indices into the client's arrays.
# (round, reporting ids, sampled ids) -> {field: [C, ...]}
FieldsFn = Callable[[int, Sequence[str], Sequence[str]], Mapping[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Cohort:
  """One round's participants: `sampled` ids; `client_ids` those that report, in order; `steps[i]` None = full
  local work, an int = only the first `steps[i]` local batches (a straggler's partial work)."""
  round_num: int
  client_ids: tuple
  steps: tuple = ()
  sampled: tuple = ()

  @classmethod
  def full(cls, round_num: int, client_ids: Sequence[str]) -> 'Cohort':
    ids = tuple(client_ids)
    return cls(round_num, ids, (None,) * len(ids), ids)

  def __post_init__(self):
    if not self.steps:
      object.__setattr__(self, 'steps', (None,) * len(self.client_ids))
    if not self.sampled:
      object.__setattr__(self, 'sampled', tuple(self.client_ids))
    if len(self.steps) != len(self.client_ids):
      raise ValueError(f'Cohort needs one steps entry per reporting client; got {len(self.steps)} for '
                       f'{len(self.client_ids)} clients.')


class TensorBatches:
  """`tf.data.Dataset.reduce` over one client's packed rows: batches rows[order[k*B : min((k+1)*B, n)]] (rows in
  stream order if `order` is None) in a `tf.while_loop`; `transform(batch, offset)` (optional) maps each batch
  (offset = index of its first example in the stream)."""

  def __init__(self, rows: collections.OrderedDict, num_examples, batch_size: int, transform=None, order=None):
    self._rows, self._n, self._batch_size, self._transform = rows, num_examples, batch_size, transform
    self._order = order

  def reduce(self, initial_state, reduce_fn):
    def step(i, state):
      lo = i * self._batch_size
      hi = tf.minimum(self._n, lo + self._batch_size)
      if self._order is None:
        batch = collections.OrderedDict((k, v[lo:hi]) for k, v in self._rows.items())
      else:
        idx = self._order[lo:hi]
        batch = collections.OrderedDict((k, tf.gather(v, idx)) for k, v in self._rows.items())
      if self._transform is not None:
        batch = self._transform(batch, lo)
      return i + 1, reduce_fn(state, batch)

    num_batches = (self._n + self._batch_size - 1) // self._batch_size
    return tf.while_loop(lambda i, _: i < num_batches, step, (tf.constant(0), initial_state))[1]


def padded_batch(rows: collections.OrderedDict, num_examples, batch_size: int, step, order=None, transform=None):
  """(batch, mask) of local step `step` of one client for the engine's client axis: `TensorBatches`' batch padded
  to `batch_size` rows (rows past the client's n repeat a real row) and a float32 row mask (1 = a real example;
  all 0 past the client's last step)."""
  lo = step * batch_size
  position = lo + tf.range(batch_size)
  mask = tf.cast(position < num_examples, tf.float32)
  position = tf.minimum(position, tf.maximum(num_examples - 1, 0))
  idx = position if order is None else tf.gather(order, position)
  batch = collections.OrderedDict((k, tf.gather(v, idx)) for k, v in rows.items())
  if transform is not None:
    batch = transform(batch, lo)
  return batch, mask


def split(num_clients: int, num_slots: int) -> list[slice]:
  """Contiguous, near-equal slices of the cohort, one per CLIENTS slot (one empty slice for an empty cohort)."""
  if num_slots < 1:
    raise ValueError(f'num_slots must be >= 1; got {num_slots}.')
  if num_clients == 0:
    return [slice(0, 0)]
  bounds = np.linspace(0, num_clients, min(num_slots, num_clients) + 1).round().astype(int)
  return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def derived_seeds(seed: int, round_num: int, client_ids: Sequence[str]) -> np.ndarray:
  from tff_fl import tasks as tasks_lib  # pylint: disable=g-import-not-at-top  (tasks imports models; keep light)
  return np.array([tasks_lib.derived_seed(seed, round_num, c) for c in client_ids], np.int32)


class Packer:
  """Packs cohorts of `train_arrays` (client id -> (x [n, ...], y [n, ...])) into slot tensors (module docstring).
  A `FlatSplit` (`tff_fl.data.flat_arrays`) is packed without a per-client loop: the same tensors, one take per
  feature for the whole slot.

  `order_fn(client_id, round_num)` gives a client's example order for the round (with its E epochs); `field_specs`
  / `fields_fn` add per-client extension fields (name -> tf.TensorSpec of one client's value).
  """

  def __init__(self, train_arrays: Mapping[str, tuple], order_fn: OrderFn, *, batch_size: int, seed: int = 0,
               num_slots: int = 1, state_dim: int = 0,
               field_specs: Optional[Mapping[str, tf.TensorSpec]] = None,
               fields_fn: Optional[FieldsFn] = None):
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1; got {batch_size}.')
    split(1, num_slots)
    self.arrays, self.order_fn, self.batch_size, self.seed = train_arrays, order_fn, batch_size, seed
    self.num_slots, self.state_dim = num_slots, state_dim
    self.field_specs = collections.OrderedDict(field_specs or {})
    self.fields_fn = fields_fn
    if hasattr(train_arrays, 'row_index'):
      x0, y0 = train_arrays.x, train_arrays.y
    else:
      x0, y0 = next(iter(train_arrays.values()))
    self._x_spec, self._y_spec = (x0.shape[1:], x0.dtype), (y0.shape[1:], y0.dtype)

  def slot_type(self) -> tff.StructType:
    """TFF type of one CLIENTS slot."""
    t = lambda spec: tff.TensorType(spec[1], [None, None] + list(spec[0]))
    info = [(k, tff.TensorType(s.dtype.as_numpy_dtype, [None] + s.shape.as_list()))
            for k, s in self.field_specs.items()]
    return tff.StructWithPythonType([
        ('x', t(self._x_spec)), ('y', t(self._y_spec)), ('n', tff.TensorType(np.int32, [None])),
        ('order', tff.TensorType(np.int32, [None, None])),
        ('seed', tff.TensorType(np.int32, [None])), ('state', tff.TensorType(np.float32, [None, self.state_dim])),
        ('info', tff.StructWithPythonType(info, collections.OrderedDict))], collections.OrderedDict)

  def orders(self, cohort: Cohort) -> list[np.ndarray]:
    out = []
    for cid, steps in zip(cohort.client_ids, cohort.steps):
      order = self.order_fn(cid, cohort.round_num)
      out.append(order if steps is None else order[:steps * self.batch_size])
    return out

  def pack(self, cohort: Cohort, states: Optional[np.ndarray] = None) -> list[collections.OrderedDict]:
    """Slot tensors for `cohort`; `states`: float32[len(client_ids), state_dim] (zeros if None)."""
    ids = list(cohort.client_ids)
    orders = self.orders(cohort)
    if states is None:
      states = np.zeros([len(ids), self.state_dim], np.float32)
    fields = dict(self.fields_fn(cohort.round_num, ids, list(cohort.sampled))) if self.fields_fn else {}
    seeds = derived_seeds(self.seed, cohort.round_num, ids)
    flat = hasattr(self.arrays, 'row_index')  # A `tff_fl.data.flat_arrays.FlatSplit`: one take per feature.
    positions = self.arrays.positions(ids) if flat else None
    slots = []
    for s in split(len(ids), self.num_slots):
      if flat:
        x, y, n, order = self._pack_flat(positions[s], orders[s])
      else:
        x, y, n, order = self._pack_rows([self.arrays[c] for c in ids[s]], orders[s])
      info = collections.OrderedDict(
          (k, np.asarray(fields[k][s], spec.dtype.as_numpy_dtype).reshape([len(n)] + spec.shape.as_list()))
          for k, spec in self.field_specs.items())
      slots.append(collections.OrderedDict(x=x, y=y, n=n, order=order, seed=seeds[s],
                                           state=np.asarray(states[s], np.float32).reshape(len(n), self.state_dim),
                                           info=info))
    return slots

  def _pack_rows(self, arrays, orders):
    """(x [C, M, ...], y, n int32[C], order int32[C, L]): each client's distinct rows once, addressed by `order`."""
    lengths = np.array([len(o) for o in orders], np.int32)
    uniques = [np.unique(np.asarray(o, np.int64), return_inverse=True) for o in orders]
    max_len = max(int(lengths.max()) if len(lengths) else 0, 1)  # >= 1: padded_batch gathers index 0.
    max_rows = max([len(u) for u, _ in uniques] + [1])
    x = np.zeros((len(arrays), max_rows) + self._x_spec[0], self._x_spec[1])
    y = np.zeros((len(arrays), max_rows) + self._y_spec[0], self._y_spec[1])
    order = np.zeros((len(arrays), max_len), np.int32)
    for c, ((xc, yc), (rows, inverse)) in enumerate(zip(arrays, uniques)):
      x[c, :len(rows)] = xc[rows]
      y[c, :len(rows)] = yc[rows]
      order[c, :len(inverse)] = inverse.reshape(-1)
    return x, y, lengths, order

  def _pack_flat(self, positions: np.ndarray, orders):
    """`_pack_rows` of the `FlatSplit` clients at `positions`, vectorised: the same tensors (each client's distinct
    rows in increasing order, `order` indexing them), from one np.unique over (client, row) keys and one take."""
    lengths = np.array([len(o) for o in orders], np.int32)
    num = len(orders)
    owner = np.repeat(np.arange(num, dtype=np.int64), lengths)
    within = np.concatenate([np.asarray(o, np.int64).reshape(-1) for o in orders]) if num else np.zeros(0, np.int64)
    span = int(within.max()) + 1 if within.size else 1
    keys, inverse = np.unique(owner * span + within, return_inverse=True)
    u_owner, u_row = keys // span, keys % span
    per_client = np.bincount(u_owner, minlength=num)
    rank = np.arange(keys.size) - np.repeat(np.cumsum(per_client) - per_client, per_client)
    max_len = max(int(lengths.max()) if num else 0, 1)  # >= 1: padded_batch gathers index 0.
    max_rows = max(int(per_client.max()) if num else 0, 1)
    x = np.zeros((num, max_rows) + self._x_spec[0], self._x_spec[1])
    y = np.zeros((num, max_rows) + self._y_spec[0], self._y_spec[1])
    rows = self.arrays.row_index(positions, within=u_row, owner=u_owner)
    x[u_owner, rank] = self.arrays.x[rows]
    y[u_owner, rank] = self.arrays.y[rows]
    order = np.zeros((num, max_len), np.int32)
    order[owner, np.arange(owner.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)] = rank[inverse.reshape(-1)]
    return x, y, lengths, order
