"""Partitioners: centralized examples -> simulated clients.

Every partitioner returns one int64 array of example indices per client. Invariants: the arrays are disjoint, each
is non-empty, and the output is a pure function of the arguments (randomness from `np.random.default_rng(seed)`).
Bad arguments, or a split that would leave a client without data, raise a one-line ValueError naming the flag.

`label_dirichlet`, `label_quantity` and `quantity_skew` are NIID-Bench's partitions (Li et al., ICDE 2022; code
Xtra-Computing/NIID-Bench, `utils.partition_data`: `noniid-labeldir`, `noniid-#label{k}`, `iid-diff-quantity`),
followed step for step with numpy's `Generator` in place of the global `np.random` / `random` state, so the draws
differ from NIID-Bench's for the same seed but have the same distribution. Its `homo` split is `iid` here; its
feature-noise setting (`homo` + `--noise`) is `tff_fl.data.feature_noise`. Where NIID-Bench is silent we chose:
  * the redraws of `label_dirichlet` / `quantity_skew` are capped (NIID-Bench loops forever): 100 draws, then a
    one-line error naming the flag;
  * `quantity_skew` checks `min(p) * N >= 10` on the proportions as NIID-Bench does, not on the integer cut sizes
    (flooring the cumulative cuts can leave a party one example short of 10);
  * NIID-Bench's `label_dirichlet` hard-codes its minimum of 10 examples and K = 10 classes (100 for CIFAR-100);
    here the classes are those present in `labels` and the minimum is the `min_examples` argument (default 10);
  * a draw of `label_dirichlet` whose class proportions all fall on capped parties (possible only when a tiny beta
    underflows to exact zeros, where NIID-Bench divides by zero) counts as a failed draw;
  * each party's indices are returned sorted (NIID-Bench shuffles them; the training order is a fresh seeded
    permutation every epoch either way).
"""

import numpy as np

from tff_fl.data import sources

PARTITIONS = ('iid', 'dirichlet', 'shards', 'natural', 'label_dirichlet', 'label_quantity', 'quantity_skew')
_DIRICHLET_ATTEMPTS = 100
NIID_BENCH_MIN_EXAMPLES = 10  # NIID-Bench's `min_require_size`.


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


def _label_dirichlet_once(labels, num_clients, beta, rng):
  """One draw of NIID-Bench's label Dirichlet; None if a class's proportions all fell on capped clients (a tiny beta
  underflows to exact zeros; NIID-Bench would divide by 0 there)."""
  parts, n = [np.zeros(0, np.int64) for _ in range(num_clients)], labels.size
  for label in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == label)).astype(np.int64)
    p = rng.dirichlet(np.full(num_clients, beta))
    p = p * np.array([part.size < n / num_clients for part in parts])
    if not p.sum() > 0:
      return None
    p = p / p.sum()
    cuts = (np.cumsum(p) * idx.size).astype(np.int64)[:-1]
    parts = [np.concatenate([part, chunk]) for part, chunk in zip(parts, np.split(idx, cuts))]
  return parts


def label_dirichlet(labels: np.ndarray, num_clients: int, beta: float, seed: int,
                    min_examples: int = NIID_BENCH_MIN_EXAMPLES) -> list[np.ndarray]:
  """NIID-Bench's label Dirichlet (`noniid-labeldir`): for each class k in turn, proportions p ~ Dir(beta) over the
  clients; a client already holding >= N / num_clients examples gets p_j = 0 (the rest renormalised); the class's
  shuffled examples are cut at floor(cumsum(p) * n_k). The whole draw is repeated until every client holds
  >= `min_examples` (at most 100 draws, same rng stream)."""
  labels = _check_labels(labels)
  _check_num_clients(num_clients, labels.size)
  if not np.isfinite(beta) or beta <= 0:
    raise ValueError(f'dirichlet_alpha must be a positive finite number (the beta of partition=label_dirichlet); '
                     f'got {beta!r}')
  if min_examples * num_clients > labels.size:
    raise ValueError(f'partition=label_dirichlet needs {min_examples} examples per client: num_clients='
                     f'{num_clients} x {min_examples} exceeds the {labels.size} examples')
  rng = np.random.default_rng(seed)
  for _ in range(_DIRICHLET_ATTEMPTS):
    parts = _label_dirichlet_once(labels, num_clients, beta, rng)
    if parts is not None and min(part.size for part in parts) >= min_examples:
      return [np.sort(part) for part in parts]
  raise ValueError(f'partition=label_dirichlet with dirichlet_alpha={beta} and num_clients={num_clients} left '
                   f'a client with fewer than {min_examples} examples in {_DIRICHLET_ATTEMPTS} draws; raise '
                   'dirichlet_alpha or lower num_clients')


def label_quantity(labels: np.ndarray, num_clients: int, labels_per_client: int, seed: int) -> list[np.ndarray]:
  """NIID-Bench's #C=k (`noniid-#label{k}`): client i holds label i mod K plus k-1 other distinct labels drawn
  uniformly at random (rejection sampling, as NIID-Bench); each label's shuffled examples are split into near-equal
  parts (sizes differ by at most 1) among the clients holding it, in client order. K = classes in `labels`."""
  labels = _check_labels(labels)
  _check_num_clients(num_clients, labels.size)
  classes = np.unique(labels)
  k = labels_per_client
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= classes.size:
    raise ValueError(f'labels_per_client must be an integer in [1, {classes.size}] (the classes of this task); '
                     f'got {k!r}')
  rng = np.random.default_rng(seed)
  held = []
  for i in range(num_clients):
    current = [i % classes.size]
    while len(current) < k:
      j = int(rng.integers(classes.size))
      if j not in current:
        current.append(j)
    held.append(current)
  parts = [[np.zeros(0, np.int64)] for _ in range(num_clients)]
  for c, label in enumerate(classes):
    idx = rng.permutation(np.flatnonzero(labels == label)).astype(np.int64)
    holders = [i for i in range(num_clients) if c in held[i]]
    if holders and len(holders) > idx.size:
      raise ValueError(f'labels_per_client={k} with num_clients={num_clients}: label {label} has {idx.size} '
                       f'examples for {len(holders)} clients; some client would get none of it')
    for i, chunk in zip(holders, np.array_split(idx, len(holders)) if holders else ()):
      parts[i].append(chunk)
  return [np.sort(np.concatenate(p)) for p in parts]


def quantity_skew(num_examples: int, num_clients: int, beta: float, seed: int,
                  min_examples: int = NIID_BENCH_MIN_EXAMPLES) -> list[np.ndarray]:
  """NIID-Bench's quantity skew (`iid-diff-quantity`): client sizes p ~ Dir(beta), redrawn until min(p) * N >=
  `min_examples` (at most 100 draws); contiguous slices of one random permutation cut at floor(cumsum(p) * N)."""
  _check_num_clients(num_clients, num_examples)
  if not np.isfinite(beta) or beta <= 0:
    raise ValueError(f'dirichlet_alpha must be a positive finite number (the beta of partition=quantity_skew); '
                     f'got {beta!r}')
  if min_examples * num_clients > num_examples:
    raise ValueError(f'partition=quantity_skew needs {min_examples} examples per client: num_clients='
                     f'{num_clients} x {min_examples} exceeds the {num_examples} examples')
  rng = np.random.default_rng(seed)
  perm = rng.permutation(num_examples).astype(np.int64)
  for _ in range(_DIRICHLET_ATTEMPTS):
    p = rng.dirichlet(np.full(num_clients, beta))
    if np.min(p * num_examples) >= min_examples:
      cuts = (np.cumsum(p) * num_examples).astype(np.int64)[:-1]
      return [np.sort(part) for part in np.split(perm, cuts)]
  raise ValueError(f'partition=quantity_skew with dirichlet_alpha={beta} and num_clients={num_clients} left a '
                   f'client with fewer than {min_examples} examples in {_DIRICHLET_ATTEMPTS} draws; raise '
                   'dirichlet_alpha or lower num_clients')


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
    labels_per_client: int = 2,
    min_examples: int = 2,
) -> tuple[list[str], list[np.ndarray]]:
  """Dispatches to a partitioner by name; returns (client ids, per-client example indices), ids sorted.

  `num_clients` is ignored by 'natural' (one client per distinct `data.groups` value). `dirichlet_alpha` is the
  concentration of 'dirichlet' and NIID-Bench's beta of 'label_dirichlet' and 'quantity_skew'; `min_examples`
  applies to 'dirichlet' (NIID-Bench's partitions use their own minimum of 10).
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
  elif name == 'label_dirichlet':
    parts = label_dirichlet(data.y, num_clients, dirichlet_alpha, seed)
  elif name == 'label_quantity':
    parts = label_quantity(data.y, num_clients, labels_per_client, seed)
  elif name == 'quantity_skew':
    parts = quantity_skew(len(data), num_clients, dirichlet_alpha, seed)
  else:
    parts = shards(data.y, num_clients, shards_per_client, seed)
  return [client_id(i, num_clients) for i in range(num_clients)], parts
