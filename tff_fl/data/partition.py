"""Partitioners: centralized examples -> simulated clients.

Every partitioner returns one int64 array of example indices per client. Invariants: the arrays are disjoint, each
is non-empty, and the output is a pure function of the arguments (randomness from `np.random.default_rng(seed)`).
Bad arguments, or a split that would leave a client without data, raise a one-line ValueError naming the flag.
"""

import numpy as np

from tff_fl.data import sources

PARTITIONS = ('iid', 'dirichlet', 'shards', 'natural')
_DIRICHLET_ATTEMPTS = 100


def client_id(index: int, num_clients: int) -> str:
  """Zero-padded id ('client_0007') whose string order equals its numeric order."""
  width = max(4, len(str(max(num_clients - 1, 0))))
  return f'client_{index:0{width}d}'


def _check_num_clients(num_clients: int, num_examples: int) -> None:
  if not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
    raise ValueError(f'num_clients must be a positive integer; got {num_clients!r}')
  if num_clients > num_examples:
    raise ValueError(
        f'num_clients={num_clients} exceeds the number of examples ({num_examples}); some client would get no data'
    )


def _check_labels(labels: np.ndarray) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels must be a 1-D integer array; got shape {labels.shape}, dtype {labels.dtype}')
  return labels


def iid(num_examples: int, num_clients: int, seed: int) -> list[np.ndarray]:
  """Uniformly random split into `num_clients` near-equal parts (sizes differ by at most 1)."""
  _check_num_clients(num_clients, num_examples)
  perm = np.random.default_rng(seed).permutation(num_examples).astype(np.int64)
  return [np.sort(part) for part in np.array_split(perm, num_clients)]


def _dirichlet_once(labels, num_clients, alpha, rng) -> list[np.ndarray]:
  """One draw: for each class, proportions p ~ Dir(alpha * 1) over clients; class examples cut at cumsum(p)."""
  parts = [[] for _ in range(num_clients)]
  for label in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == label))
    proportions = rng.dirichlet(np.full(num_clients, alpha))
    cuts = (np.cumsum(proportions)[:-1] * idx.size).astype(np.int64)
    for client, chunk in enumerate(np.split(idx, cuts)):
      parts[client].append(chunk)
  return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def dirichlet(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_examples: int = 2
) -> list[np.ndarray]:
  """Label-skewed split (Hsu et al. 2019): per-class client proportions ~ Dir(alpha); small alpha -> more skew.

  Redraws (up to 100 attempts, same rng stream) until every client holds >= `min_examples` examples.
  """
  labels = _check_labels(labels)
  _check_num_clients(num_clients, labels.size)
  if not np.isfinite(alpha) or alpha <= 0:
    raise ValueError(f'dirichlet_alpha must be a positive finite number; got {alpha!r}')
  if min_examples < 1 or min_examples * num_clients > labels.size:
    raise ValueError(
        f'min_examples={min_examples} with num_clients={num_clients} needs more than the {labels.size} examples'
    )
  rng = np.random.default_rng(seed)
  for _ in range(_DIRICHLET_ATTEMPTS):
    parts = _dirichlet_once(labels, num_clients, alpha, rng)
    if min(p.size for p in parts) >= min_examples:
      return parts
  raise ValueError(
      f'dirichlet_alpha={alpha} with num_clients={num_clients} left some client with fewer than {min_examples} '
      f'examples in {_DIRICHLET_ATTEMPTS} draws; raise dirichlet_alpha or lower num_clients'
  )


def shards(labels: np.ndarray, num_clients: int, shards_per_client: int, seed: int) -> list[np.ndarray]:
  """Pathological non-IID split (McMahan et al. 2017).

  Sorts examples by label (random order within a label), cuts the sorted list into num_clients * shards_per_client
  contiguous shards of near-equal size (sizes differ by at most 1), and deals each client `shards_per_client`
  random shards.
  """
  labels = _check_labels(labels)
  if not isinstance(shards_per_client, (int, np.integer)) or shards_per_client < 1:
    raise ValueError(f'shards_per_client must be a positive integer; got {shards_per_client!r}')
  _check_num_clients(num_clients, labels.size)
  num_shards = num_clients * shards_per_client
  if num_shards > labels.size:
    raise ValueError(
        f'num_clients={num_clients} x shards_per_client={shards_per_client} = {num_shards} shards exceeds the '
        f'{labels.size} examples; some shard would be empty'
    )
  rng = np.random.default_rng(seed)
  shuffled = rng.permutation(labels.size)
  by_label = shuffled[np.argsort(labels[shuffled], kind='stable')].astype(np.int64)
  shard_list = np.array_split(by_label, num_shards)
  order = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
  return [np.sort(np.concatenate([shard_list[s] for s in row])) for row in order]


def natural(groups: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
  """One client per distinct group id; ids are str(group), returned in sorted string order."""
  groups = np.asarray(groups)
  if groups.ndim != 1 or groups.size == 0:
    raise ValueError(f'groups must be a non-empty 1-D array; got shape {groups.shape}')
  names = groups.astype(str)
  ids = sorted(set(names.tolist()))
  return ids, [np.flatnonzero(names == cid).astype(np.int64) for cid in ids]


def partition(
    name: str,
    data: sources.ArrayData,
    num_clients: int,
    seed: int,
    *,
    dirichlet_alpha: float = 0.5,
    shards_per_client: int = 2,
    min_examples: int = 2,
) -> tuple[list[str], list[np.ndarray]]:
  """Dispatches to a partitioner by name; returns (client ids, per-client example indices), ids sorted.

  `num_clients` is ignored by 'natural' (one client per distinct `data.groups` value).
  """
  if name not in PARTITIONS:
    raise ValueError(f'partition must be one of {", ".join(PARTITIONS)}; got {name!r}')
  if name == 'natural':
    if data.groups is None:
      raise ValueError('partition=natural: this task has no natural client ids (ArrayData.groups is None)')
    return natural(data.groups)
  if name == 'iid':
    parts = iid(len(data), num_clients, seed)
  elif name == 'dirichlet':
    parts = dirichlet(data.y, num_clients, dirichlet_alpha, seed, min_examples=min_examples)
  else:
    parts = shards(data.y, num_clients, shards_per_client, seed)
  return [client_id(i, num_clients) for i in range(num_clients)], parts
