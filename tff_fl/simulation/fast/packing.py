"""Packs a cohort's client data into padded tensors, in exactly the order `Task.train_dataset` would yield it.

`Task.train_dataset(cid, epochs=E, batch_size=B, seed=s, round_num=r)` is the client's examples permuted E times by
numpy (seed from (s, r, cid)), concatenated and batched. Building and serialising one such `tf.data` graph per client
per round is what makes stock TFF slow for small clients. Here the same orders are gathered with numpy into one
group tensor per CLIENTS slot:

  OrderedDict(x=[C_g, L_max, *feature_shape] float32, y=[C_g, L_max] int32, n=[C_g] int32)

where row c holds client c's n[c] = E * n_c examples in training order (padding after `n[c]` is never read). The
engine batches rows[c, :n[c]] by B, so batches run across epoch boundaries exactly like the reference dataset.
"""

import collections
from typing import Callable, Optional, Sequence

import numpy as np

from tff_fl import tasks as tasks_lib

ReportsFn = Callable[[int, Sequence[str]], Sequence[tuple[str, Optional[int]]]]


def train_order(task: tasks_lib.Task, client_id: str, *, epochs: int, seed: int, round_num: int) -> np.ndarray:
  """Indices into the client's train arrays in the order `Task.train_dataset` yields them (its numpy rule)."""
  return task.train_order(client_id, epochs=epochs, seed=seed, round_num=round_num)


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
                           batch_size: Optional[int] = None,
                           reports_fn: Optional[ReportsFn] = None) -> Callable[[int, Sequence[str]], list]:
  """`(round_num, client_ids) -> [group tensors]` for the fast engine: the examples, in the order, that
  `training_loop.default_client_inputs` gives the stock engine (the engine batches them).

  `reports_fn(round_num, cohort) -> [(client_id, steps)]` (e.g. `regimes.RegimeInputs.reports`: dropouts and
  stragglers) picks the clients that report; a client with `steps` not None keeps only the examples of its first
  `steps` batches of size `batch_size`, as `dataset.take(steps)` does on the stock path.
  """
  if epochs < 1:
    raise ValueError(f'epochs must be >= 1; got {epochs}.')
  if reports_fn is not None and (batch_size is None or batch_size < 1):
    raise ValueError(f'batch_size must be >= 1 when reports_fn is given; got {batch_size}.')
  arrays = task.data.train

  def client_inputs(round_num: int, client_ids: Sequence[str]) -> list:
    reports = reports_fn(round_num, client_ids) if reports_fn else [(c, None) for c in client_ids]
    ids, orders = [], []
    for client_id, steps in reports:
      order = train_order(task, client_id, epochs=epochs, seed=seed, round_num=round_num)
      ids.append(client_id)
      orders.append(order if steps is None else order[:steps * batch_size])
    return [pack([arrays[c] for c in ids[s]], orders[s]) for s in split(len(ids), num_groups)]

  return client_inputs
