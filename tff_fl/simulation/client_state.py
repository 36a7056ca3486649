"""Per-client state that persists across rounds (control variates, error-feedback residuals, personal layers).

A store maps client id -> one float32 vector of length `dim` (the flattened client state; the engine process
packs it back into the state's structure). A client never written reads as `None` (the process substitutes the
algorithm's initial client state). Two backends share one interface:

* `InMemoryStore`: a dict of vectors. Memory is at most `num_clients * dim * 4` bytes, flat in the number of rounds.
  Checkpoint arrays hold every stored vector (`ids`: str[n], `values`: float32[n, dim]).
* `DiskStore(directory)`: one `.npy` file per client version, `<dir>/<shard>/<id>.<generation>.npy`; only the
  manifest (client id -> generation, a few ints per client) lives in RAM, so 10,000 clients x 200k parameters need
  a cohort's worth of vectors at a time. Each `put_many` is one generation. Checkpoint arrays hold the manifest
  only; files referenced by the last `keep` checkpoints (the `CheckpointManager` default is 2) and by the live
  manifest are kept, all others deleted, so disk use is flat in rounds (<= keep + 1 versions per client). Restoring
  a checkpoint reverts the manifest, so writes made after it (a crashed round) are ignored and removed. Files
  are written to a temporary name and renamed, so a kill never leaves a torn file; `checkpoint_arrays` fsyncs the
  files written since the previous checkpoint (and their directories) before it returns the manifest, so the
  checkpoint that references them is only written once they are durable (a machine crash loses no checkpointed
  state).

`ClientStateHook` plugs a store into the training loop: it saves the store (and per-client bookkeeping: rounds
participated, last training loss) with every checkpoint, restores it on resume, and at the end writes `clients.csv`
(client_id, rounds_participated, last_loss, accuracy_<kind> for each evaluator, e.g. global / personal / finetuned)
unless the run's release policy (`training_loop.RoundHook.release`) withholds 'clients.csv' (DP runs).

Invariant: after `restore_arrays(a)` with `a` from `checkpoint_arrays()`, every `get` returns what it returned when
`a` was taken.
"""

import abc
import collections
import csv
import glob
import hashlib
import io
import os
import re
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from tff_fl.simulation import checkpoint as checkpoint_lib
from tff_fl.simulation import training_loop

_FILE_RE = re.compile(r'^(.+)\.(\d+)\.npy$')
_SAFE_RE = re.compile(r'[^A-Za-z0-9_.-]')


class ClientStateStore(abc.ABC):
  """Client id -> float32[dim]. Subclasses implement `get`, `_write`, `client_ids` and the checkpoint methods."""

  def __init__(self, dim: int):
    if not isinstance(dim, (int, np.integer)) or dim < 1:
      raise ValueError(f'dim must be a positive int (flattened client state size); got {dim!r}.')
    self.dim = int(dim)

  @abc.abstractmethod
  def get(self, client_id: str) -> Optional[np.ndarray]:
    """The stored float32[dim] vector of `client_id`, or None if it was never written."""

  def get_many(self, client_ids: Sequence[str]) -> list:
    return [self.get(cid) for cid in client_ids]

  def put_many(self, client_ids: Sequence[str], values: Iterable[np.ndarray]) -> None:
    """Stores one vector per client (one generation: a round's cohort)."""
    rows = [self._check(cid, v) for cid, v in zip(client_ids, values)]
    if len(rows) != len(client_ids):
      raise ValueError(f'put_many needs one value per client id; got {len(client_ids)} ids, {len(rows)} values.')
    self._write(list(client_ids), rows)

  def put(self, client_id: str, value: np.ndarray) -> None:
    self.put_many([client_id], [value])

  def _check(self, client_id, value) -> np.ndarray:
    if not isinstance(client_id, str) or not client_id:
      raise ValueError(f'client_id must be a non-empty str; got {client_id!r}.')
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.size != self.dim:
      raise ValueError(f'client state of {client_id!r} has {arr.size} values; this store holds dim={self.dim}.')
    return arr

  @abc.abstractmethod
  def _write(self, client_ids: list, rows: list) -> None:
    pass

  @abc.abstractmethod
  def client_ids(self) -> list:
    """Ids of clients with stored state, sorted."""

  @abc.abstractmethod
  def checkpoint_arrays(self) -> dict:
    """Named numpy arrays (no object dtype) from which `restore_arrays` rebuilds the current contents."""

  @abc.abstractmethod
  def restore_arrays(self, arrays: dict) -> None:
    pass


class InMemoryStore(ClientStateStore):
  """All client states in a dict; checkpoints carry the full values."""

  def __init__(self, dim: int):
    super().__init__(dim)
    self._values: dict[str, np.ndarray] = {}

  def get(self, client_id):
    value = self._values.get(client_id)
    return None if value is None else value.copy()

  def _write(self, client_ids, rows):
    for cid, row in zip(client_ids, rows):
      self._values[cid] = row.copy()

  def client_ids(self):
    return sorted(self._values)

  def __contains__(self, client_id):
    return client_id in self._values

  def checkpoint_arrays(self):
    ids = self.client_ids()
    values = (np.stack([self._values[c] for c in ids]) if ids else np.zeros([0, self.dim], np.float32))
    return {'ids': np.array(ids, dtype=np.str_), 'values': values, 'dim': np.int64(self.dim)}

  def restore_arrays(self, arrays):
    _check_dim(arrays, self.dim)
    values = np.asarray(arrays['values'], np.float32).reshape(-1, self.dim)
    self._values = {str(c): v.copy() for c, v in zip(arrays['ids'], values)}


class DiskStore(ClientStateStore):
  """One versioned .npy file per client under `directory`; only the manifest is kept in memory."""

  def __init__(self, directory: str, dim: int, keep: int = 2):
    super().__init__(dim)
    if not directory:
      raise ValueError('--client_state_dir must be a directory path for the disk store; got an empty string.')
    if keep < 1:
      raise ValueError(f'keep must be >= 1; got {keep}.')
    try:
      os.makedirs(directory, exist_ok=True)
    except OSError as e:
      raise ValueError(f'--client_state_dir: cannot create {directory}: {e.strerror}.') from e
    self.directory = directory
    self.keep = keep
    self._manifest: dict[str, int] = {}  # client id -> generation of its live file.
    self._snapshots: collections.deque = collections.deque()  # manifests of the last `keep` checkpoints.
    self._generation = 0
    self._unsynced: set[str] = set()  # Files written since the last checkpoint.

  def _path(self, client_id: str, generation: int) -> str:
    safe = _SAFE_RE.sub('_', client_id)
    shard = hashlib.sha1(client_id.encode()).hexdigest()[:2]
    if safe != client_id:  # Keep distinct ids distinct after escaping.
      safe = f'{safe}-{hashlib.sha1(client_id.encode()).hexdigest()[:10]}'
    return os.path.join(self.directory, shard, f'{safe}.{generation}.npy')

  def get(self, client_id):
    generation = self._manifest.get(client_id)
    if generation is None:
      return None
    path = self._path(client_id, generation)
    try:
      value = np.load(path, allow_pickle=False)
    except FileNotFoundError:
      raise ValueError(f'--client_state_dir: state file {path} of client {client_id!r} is missing; the '
                       'directory was changed or belongs to another run.') from None
    return self._check(client_id, value)

  def _referenced(self, client_id: str, generation: int) -> bool:
    return (self._manifest.get(client_id) == generation
            or any(s.get(client_id) == generation for s in self._snapshots))

  def _write(self, client_ids, rows):
    self._generation += 1
    for cid, row in zip(client_ids, rows):
      path = self._path(cid, self._generation)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      tmp = path + '.tmp.npy'
      np.save(tmp, row, allow_pickle=False)
      os.replace(tmp, path)
      self._unsynced.add(path)
      previous = self._manifest.get(cid)
      self._manifest[cid] = self._generation
      if previous is not None and previous != self._generation and not self._referenced(cid, previous):
        _remove(self._path(cid, previous))

  def client_ids(self):
    return sorted(self._manifest)

  def __contains__(self, client_id):
    return client_id in self._manifest

  def _sync(self) -> None:
    """fsyncs the live files written since the last checkpoint, then their directories (renames are durable)."""
    live = {self._path(c, g) for c, g in self._manifest.items()}
    paths = sorted(p for p in self._unsynced if p in live)
    for path in paths + sorted({os.path.dirname(p) for p in paths}):
      fd = os.open(path, os.O_RDONLY)
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
    self._unsynced.clear()

  def checkpoint_arrays(self):
    self._sync()
    self._snapshots.append(dict(self._manifest))
    while len(self._snapshots) > self.keep:
      dropped = self._snapshots.popleft()
      for cid, generation in dropped.items():
        if not self._referenced(cid, generation):
          _remove(self._path(cid, generation))
    ids = self.client_ids()
    return {'ids': np.array(ids, dtype=np.str_),
            'generations': np.array([self._manifest[c] for c in ids], np.int64),
            'generation': np.int64(self._generation), 'dim': np.int64(self.dim)}

  def restore_arrays(self, arrays):
    _check_dim(arrays, self.dim)
    self._manifest = {str(c): int(g) for c, g in zip(arrays['ids'], arrays['generations'])}
    self._generation = int(arrays['generation'])
    self._snapshots = collections.deque([dict(self._manifest)])
    live = {self._path(c, g) for c, g in self._manifest.items()}
    missing = [p for p in live if not os.path.exists(p)]
    if missing:
      raise ValueError(f'--client_state_dir: {len(missing)} client state files of the checkpoint are missing '
                       f'(e.g. {missing[0]}); resume with the --client_state_dir the run was started with.')
    for path in glob.glob(os.path.join(self.directory, '*', '*.npy')):
      if path not in live:  # Written after the checkpoint (a crashed round) or by an older checkpoint.
        _remove(path)


def _check_dim(arrays, dim):
  if 'dim' not in arrays or int(arrays['dim']) != dim:
    raise ValueError(f'checkpointed client states have dim={arrays.get("dim")}; this run needs dim={dim} '
                     '(a different model or algorithm); use a new --experiment_name.')


def _remove(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def make_store(dim: int, client_state_dir: str = '') -> ClientStateStore:
  """`DiskStore(client_state_dir, dim)` if a directory is given, else `InMemoryStore(dim)`."""
  return DiskStore(client_state_dir, dim) if client_state_dir else InMemoryStore(dim)


class ClientStateHook(training_loop.RoundHook):
  """Checkpoints `store` (may be None) and per-client bookkeeping; writes `<exp_dir>/clients.csv` at the end.

  `evaluators`: kind -> fn(process, state) -> {client_id: accuracy}, run once at the end of training. Per-client
  losses come from the round output's `client_ids` / `client_metrics` (`tff_fl.engine.RoundOutput`; a process
  without per-client metrics, e.g. the stock one, leaves the last loss empty).
  """
  name = 'client_state'

  def __init__(self, client_ids: Sequence[str], exp_dir: str, store: Optional[ClientStateStore] = None,
               evaluators: Optional[dict[str, Callable]] = None):
    self.all_client_ids = list(client_ids)
    self.exp_dir = exp_dir
    self.store = store
    self.evaluators = dict(evaluators or {})
    self.rounds: dict[str, int] = collections.Counter()
    self.last_loss: dict[str, float] = {}
    self._summary: dict = {}

  def after_round(self, round_num, output, row):
    del round_num, row
    client_ids = list(output.client_ids)
    metrics = list(output.client_metrics) or [None] * len(client_ids)
    for cid, m in zip(client_ids, metrics):
      self.rounds[cid] += 1
      if m is not None:
        self.last_loss[cid] = float(m['loss'])

  def checkpoint_arrays(self):
    arrays = {} if self.store is None else {f'store/{k}': v for k, v in self.store.checkpoint_arrays().items()}
    ids = sorted(self.rounds)
    arrays['ids'] = np.array(ids, dtype=np.str_)
    arrays['rounds'] = np.array([self.rounds[c] for c in ids], np.int64)
    arrays['last_loss'] = np.array([self.last_loss.get(c, np.nan) for c in ids], np.float64)
    return arrays

  def restore_arrays(self, arrays):
    if self.store is not None:
      store_arrays = {k[len('store/'):]: v for k, v in arrays.items() if k.startswith('store/')}
      if not store_arrays:
        raise ValueError('the checkpoint holds no client states; resume with the --algorithm it was started with.')
      self.store.restore_arrays(store_arrays)
    ids = [str(c) for c in arrays.get('ids', [])]
    self.rounds = collections.Counter(dict(zip(ids, (int(r) for r in arrays['rounds'])))) if ids else (
        collections.Counter())
    self.last_loss = {c: float(l) for c, l in zip(ids, arrays['last_loss']) if np.isfinite(l)} if ids else {}

  def on_train_end(self, process, state, summary):
    if self.release is not None and not self.release.allows('clients.csv'):
      return  # Per-client figures under a privacy claim: neither evaluated nor written (see `release`).
    accuracies = {kind: fn(process, state) for kind, fn in self.evaluators.items()}
    header = ['client_id', 'rounds_participated', 'last_loss'] + [f'accuracy_{k}' for k in accuracies]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for cid in self.all_client_ids:
      loss = self.last_loss.get(cid)
      writer.writerow([cid, self.rounds.get(cid, 0), '' if loss is None else f'{loss:.6g}']
                      + ['' if acc.get(cid) is None else f'{acc[cid]:.6g}' for acc in accuracies.values()])
    checkpoint_lib._atomic_write_bytes(os.path.join(self.exp_dir, 'clients.csv'), buf.getvalue().encode())  # pylint: disable=protected-access
    self._summary = collections.OrderedDict(clients_participated=sum(1 for c in self.rounds if self.rounds[c]))
    for kind, acc in accuracies.items():
      values = np.array([v for v in acc.values() if v is not None], np.float64)
      if values.size:
        for stat, value in (('mean', values.mean()), ('p10', np.percentile(values, 10)),
                            ('p50', np.percentile(values, 50)), ('p90', np.percentile(values, 90))):
          self._summary[f'client_accuracy_{kind}_{stat}'] = float(value)

  def summary(self):
    return self._summary
