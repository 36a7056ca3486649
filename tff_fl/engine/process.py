"""The one process protocol the training loop is typed against, and the engine's implementation of it.

  initialize() -> state
  next(state, cohort: packing.Cohort) -> RoundOutput(state, metrics, client_ids, client_metrics)
  get_model_weights(state) -> ModelWeights;  set_model_weights(state, weights) -> state

`metrics` is a nested OrderedDict with `client_work/train` (the model's metrics over the cohort), `aggregator`,
`finalizer` and one entry per extension that reports; `client_metrics[i]` is OrderedDict(loss, num_examples, ...)
of `client_ids[i]` (the clients that reported).

`EngineProcess` packs the cohort (`packing.Packer`), reads the reporters' client states from its store (a client
never seen gets the algorithm's initial state), runs the round and writes the new states back. The round is a plain
`tff.templates.IterativeProcess` over packed slots (`iterative_process`, usable on its own); `runtime='local'`
(default) runs it in this process as one TF graph (`local_round`: no serialization to TFF's worker),
`runtime='tff'` on the installed TFF execution context (e.g. several workers). A round whose aggregator reports a
nonzero `aborted` measurement (`aborted`) leaves the state and the clients' states as they were; its metrics still
say what happened.
"""

import collections
from typing import Any, NamedTuple, Optional, Protocol, Sequence

import numpy as np

from tff_fl.engine import graph_calls
from tff_fl.engine import local_round
from tff_fl.engine import packing

RUNTIMES = ('local', 'tff')


def aborted(metrics) -> bool:
  """True if an aggregator measurement named `aborted` is nonzero (e.g. secure aggregation with fewer than t
  survivors): the engine then returns the round's input state and keeps the client states."""
  def walk(value):
    if hasattr(value, '_asdict'):
      value = value._asdict()
    if hasattr(value, 'items'):
      return any((k == 'aborted' and np.any(np.asarray(v) != 0)) or walk(v) for k, v in value.items())
    return False
  return walk(metrics.get('aggregator', {}) if hasattr(metrics, 'get') else {})


class RoundOutput(NamedTuple):
  state: Any
  metrics: collections.OrderedDict
  client_ids: tuple = ()
  client_metrics: tuple = ()


class Process(Protocol):
  """What the training loop needs of a process (see module docstring)."""

  def initialize(self) -> Any:
    ...

  def next(self, state, cohort: packing.Cohort) -> RoundOutput:
    ...

  def get_model_weights(self, state) -> Any:
    ...

  def set_model_weights(self, state, weights) -> Any:
    ...


class _DictStore:
  """Client id -> float32 vector, in memory (the default store; `tff_fl.simulation.client_state` has more)."""

  def __init__(self, dim: int):
    self.dim, self._values = dim, {}

  def get_many(self, client_ids):
    return [self._values.get(c) for c in client_ids]

  def put_many(self, client_ids, values):
    self._values.update((c, np.asarray(v, np.float32).copy()) for c, v in zip(client_ids, values))


def resolve_runtime(runtime: Optional[str], num_slots: int) -> str:
  """'local' or 'tff' (module docstring); None = 'local' for one slot, else 'tff'. ValueError if not runnable."""
  runtime = runtime or ('local' if num_slots == 1 else 'tff')
  if runtime not in RUNTIMES:
    raise ValueError(f'runtime must be one of {RUNTIMES}; got {runtime!r}.')
  if runtime == 'local' and num_slots != 1:
    raise ValueError(f"runtime='local' runs one slot; got num_slots={num_slots} (use runtime='tff').")
  return runtime


class EngineProcess:
  """`Process` over the packed engine (module docstring). `round_`: `round.build_round`'s result. `store`:
  get_many/put_many of float32[state_dim], or `store_fn(state_dim) -> store`, called here for a stateful algorithm
  only (the size depends on the algorithm). `runtime`: 'local' or 'tff'; default 'local' for one slot."""

  def __init__(self, round_, packer: packing.Packer, store=None, runtime: Optional[str] = None):
    runtime = resolve_runtime(runtime, packer.num_slots)
    self.round, self.packer, self.parts, self.runtime = round_, packer, round_.parts, runtime
    self._round = local_round.LocalRound(round_) if runtime == 'local' else round_.iterative_process
    parts = self.parts
    self.extensions = list(parts.extensions)
    self.state_dim = parts.state_dim
    self._initial_client_state = None
    if parts.stateful:  # In this process (no TFF runtime needed for it).
      self._initial_client_state = np.asarray(graph_calls.SessionComputation(parts.initial_client_state)(), np.float32)
    if callable(store):
      store = store(self.state_dim) if parts.stateful else None
    if parts.stateful and store is not None and getattr(store, 'dim', self.state_dim) != self.state_dim:
      raise ValueError(f'store dim {store.dim} does not match the client state size {self.state_dim}.')
    self.store = store if store is not None or not parts.stateful else _DictStore(self.state_dim)

  @property
  def iterative_process(self):
    """The federated round (`round.Round.iterative_process`), e.g. for TFF's runtime or a multi-worker split."""
    return self.round.iterative_process

  @property
  def client_execution(self) -> str:
    """How a slot's clients run: 'client axis', or 'sequential (<why>)' (`round.build_round`'s client_axis)."""
    return self.round.functions.client_execution

  @property
  def stateful(self) -> bool:
    return self.parts.stateful

  def initial_client_state(self) -> Optional[np.ndarray]:
    return None if self._initial_client_state is None else self._initial_client_state.copy()

  def client_states(self, client_ids: Sequence[str]) -> np.ndarray:
    """float32[K, state_dim]: stored states, the initial state for clients never seen."""
    if not self.stateful:
      return np.zeros([len(client_ids), 0], np.float32)
    rows = [self._initial_client_state if v is None else v for v in self.store.get_many(list(client_ids))]
    return np.stack(rows).astype(np.float32, copy=False) if rows else np.zeros([0, self.state_dim], np.float32)

  def client_state_structure(self, vector: np.ndarray):
    """One flattened client state as the algorithm's structure (numpy)."""
    from tff_fl.aggregators import flat  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.nest.map_structure(lambda t: t.numpy(), flat.unflatten_value(tf.constant(vector),
                                                                           self.parts.client_state_type))

  def initialize(self):
    return self._round.initialize()

  def next(self, state, cohort: packing.Cohort) -> RoundOutput:
    if not isinstance(cohort, packing.Cohort):
      raise TypeError(f'next needs a tff_fl.engine.Cohort; got {type(cohort).__name__}.')
    ids = list(cohort.client_ids)
    slots = self.packer.pack(cohort, self.client_states(ids) if self.stateful else None)
    new_state, metrics, per_client = self._round.next(state, slots)
    round_aborted = aborted(metrics)
    if round_aborted:  # The aggregator gave up on this round: nothing of it reaches the server or the clients.
      new_state = state
    join = lambda parts: parts[0] if len(parts) == 1 else np.concatenate(parts)  # One slot: no copy of [C, S].
    merged = collections.OrderedDict((k, join([np.asarray(p[k]) for p in per_client])) for k in per_client[0])
    if self.stateful and ids and not round_aborted:
      self.store.put_many(ids, list(merged['state']))
    metrics = collections.OrderedDict(metrics)
    server_ext = metrics.pop('extensions', {})
    for e in self.extensions:
      prefix = e.name + '__'
      own = collections.OrderedDict((k[len(prefix):], v) for k, v in merged.items() if k.startswith(prefix))
      values = collections.OrderedDict(server_ext.get(e.name, {}))
      values.update(e.summarize(own) if own or e.has('summarize') else {})
      if values:
        metrics[e.name] = values
    client_metrics = tuple(
        collections.OrderedDict((k, float(v[i])) for k, v in merged.items() if k != 'state') for i in range(len(ids)))
    return RoundOutput(new_state, metrics, tuple(ids), client_metrics)

  def get_model_weights(self, state):
    return state['model']

  def set_model_weights(self, state, weights):
    state = collections.OrderedDict(state)
    state['model'] = weights
    return state
