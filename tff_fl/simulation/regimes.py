"""Participation regimes for the training loop: samplers, a participation function and hooks.

Cross-device (Kairouz et al. 2021, Table 1): a large population of small clients, 0.1-1% sampled per round, of which
some drop out during the round and some are stragglers that miss the report deadline. Cross-silo: 2-100 clients
(organisations), all participating every round, with many local steps.

Definitions (every draw depends only on (seed, round, client), so a resumed run sees the same events):
  dropout:     a sampled client drops with probability `dropout_rate` and reports nothing.
  straggler:   a client that did not drop is a straggler with probability `straggler_fraction`; by the deadline it
               has finished floor(u * S) of its S local steps, u ~ U[0, 1). Policy 'drop' discards its update;
               'partial' keeps the partial local work (its first floor(u * S) batches; none if that is 0).
  diurnal:     client c has a time-zone offset o_c ~ U{0..period-1} (seeded); it is available in round r iff
               (r + o_c) mod period < window (e.g. 8 of 24 "hours" charging on wifi): a fraction window/period of
               the population at any time, with a composition that rotates over the day.

`RegimeParticipation` is a participation function `(round, sampled ids) -> tff_fl.engine.Cohort` (the training
loop's `participation`): the Cohort's `client_ids` are the clients that report, its `steps` their partial work.
`RegimeHook` reports its event counts, `AvailabilityHook` the available population of a sampler.
"""

import collections
import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from tff_fl import engine
from tff_fl import tasks as tasks_lib
from tff_fl.simulation import training_loop

AVAILABILITY = ('always', 'diurnal')
STRAGGLER_POLICIES = ('drop', 'partial')
CROSS_DEVICE_PARTICIPATION = (0.001, 0.01)
CROSS_SILO_CLIENTS = (2, 100)


def client_uniform(seed: int, round_num: int, client_id: str, stream: str) -> float:
  """U[0, 1) draw that depends only on (seed, round, client, stream)."""
  return float(np.random.default_rng(tasks_lib.derived_seed(seed, round_num, f'{stream}/{client_id}')).random())


def local_steps(num_examples: int, epochs: int, batch_size: int) -> int:
  """S = ceil(epochs * n / B): the local steps of a client that finishes its work (the loop's datasets repeat the
  epochs, then batch, so a batch may span an epoch boundary)."""
  return math.ceil(epochs * num_examples / batch_size)


@dataclasses.dataclass(frozen=True)
class ClientFate:
  """What happened to one sampled client: `steps` None = full work reported; an int = partial work reported;
  `reported` False = nothing reached the server."""
  client_id: str
  dropped: bool
  straggler: bool
  steps: Optional[int]
  reported: bool


class Participation:
  """Dropout and straggler events of sampled clients (see module docstring)."""

  def __init__(self, dropout_rate: float = 0.0, straggler_fraction: float = 0.0, straggler_policy: str = 'drop',
               seed: int = 0):
    for name, value in (('dropout_rate', dropout_rate), ('straggler_fraction', straggler_fraction)):
      if not 0.0 <= value < 1.0:
        raise ValueError(f'{name} must be in [0, 1); got {value}.')
    if straggler_policy not in STRAGGLER_POLICIES:
      raise ValueError(f"straggler_policy must be one of {', '.join(STRAGGLER_POLICIES)}; got '{straggler_policy}'.")
    self.dropout_rate, self.straggler_fraction = dropout_rate, straggler_fraction
    self.straggler_policy, self.seed = straggler_policy, seed

  def fate(self, round_num: int, client_id: str, total_steps: int) -> ClientFate:
    if client_uniform(self.seed, round_num, client_id, 'dropout') < self.dropout_rate:
      return ClientFate(client_id, True, False, None, False)
    if client_uniform(self.seed, round_num, client_id, 'straggler') >= self.straggler_fraction:
      return ClientFate(client_id, False, False, None, True)
    steps = int(math.floor(client_uniform(self.seed, round_num, client_id, 'progress') * total_steps))
    kept = self.straggler_policy == 'partial' and steps > 0
    return ClientFate(client_id, False, True, steps if kept else None, kept)


class RegimeParticipation:
  """`(round, sampled ids) -> engine.Cohort` of the clients that report (sampled order), partial ones with their
  finished steps. `stats` counts the events of the current round (it may be called per sub-cohort)."""

  def __init__(self, task: tasks_lib.Task, cfg: training_loop.LoopConfig, participation: Participation):
    self.task, self.cfg, self.participation = task, cfg, participation
    self.round_num, self.stats = None, self._empty_stats()

  @staticmethod
  def _empty_stats():
    return collections.OrderedDict(sampled=0, dropped=0, stragglers=0, partial=0, reported=0)

  def plan(self, round_num: int, cohort: Sequence[str]) -> list[ClientFate]:
    sizes = self.task.data.num_examples('train')
    return [self.participation.fate(round_num, cid, local_steps(sizes[cid], self.cfg.client_epochs_per_round,
                                                                 self.cfg.client_batch_size)) for cid in cohort]

  def __call__(self, round_num: int, sampled: Sequence[str]) -> engine.Cohort:
    if round_num != self.round_num:
      self.round_num, self.stats = round_num, self._empty_stats()
    fates = self.plan(round_num, sampled)
    for f in fates:
      for key, hit in (('sampled', True), ('dropped', f.dropped), ('stragglers', f.straggler),
                       ('partial', f.steps is not None), ('reported', f.reported)):
        self.stats[key] += int(hit)
    reported = [f for f in fates if f.reported]
    return engine.Cohort(round_num, tuple(f.client_id for f in reported), tuple(f.steps for f in reported),
                         tuple(sampled))


class DiurnalAvailability:
  """Availability mask of the population per round (see module docstring)."""

  def __init__(self, num_clients: int, seed: int, period: int = 24, window: int = 8):
    if not 1 <= window <= period:
      raise ValueError(f'availability window must be in [1, period={period}]; got {window}.')
    self.period, self.window = period, window
    self.offsets = np.random.default_rng([seed, 7]).integers(0, period, num_clients)

  def available(self, round_num: int) -> np.ndarray:
    return (round_num + self.offsets) % self.period < self.window


class AvailabilitySampler:
  """Samples `clients_per_round` clients uniformly among those available (all, if fewer are available)."""

  def __init__(self, client_ids: Sequence[str], clients_per_round: int, seed: int, availability: str = 'always',
               **diurnal_kwargs):
    if availability not in AVAILABILITY:
      raise ValueError(f"availability must be one of {', '.join(AVAILABILITY)}; got '{availability}'.")
    if not 1 <= clients_per_round <= len(client_ids):
      raise ValueError(f'clients_per_round must be between 1 and num_clients={len(client_ids)}; '
                       f'got {clients_per_round}.')
    self.client_ids, self.clients_per_round, self.seed = list(client_ids), clients_per_round, seed
    self.pattern = DiurnalAvailability(len(client_ids), seed, **diurnal_kwargs) if availability == 'diurnal' else None
    self.last_available = len(client_ids)

  def sample(self, round_num: int) -> list[str]:
    mask = np.ones(len(self.client_ids), bool) if self.pattern is None else self.pattern.available(round_num)
    pool = np.flatnonzero(mask)
    self.last_available = int(pool.size)
    rng = np.random.default_rng([self.seed, round_num])
    idx = rng.choice(pool, size=min(self.clients_per_round, pool.size), replace=False)
    return [self.client_ids[i] for i in sorted(idx)]


class FullParticipationSampler:
  """Cross-silo: every client every round."""

  def __init__(self, client_ids: Sequence[str]):
    self.client_ids = list(client_ids)
    self.last_available = len(self.client_ids)

  def sample(self, round_num: int) -> list[str]:
    del round_num
    return list(self.client_ids)


def check_regime(regime: str, num_clients: int, clients_per_round: int) -> None:
  """ValueError unless the population and cohort fit the regime's definition ('custom' accepts anything)."""
  if regime == 'cross_device':
    low, high = CROSS_DEVICE_PARTICIPATION
    rate = clients_per_round / num_clients
    if not low <= rate <= high or num_clients < 1000:
      raise ValueError(f'regime=cross_device needs num_clients >= 1000 and a cohort fraction '
                       f'clients_per_round/num_clients in [{low}, {high}]; got {clients_per_round}/{num_clients} = {rate:.4f}.')
  elif regime == 'cross_silo':
    low, high = CROSS_SILO_CLIENTS
    if not low <= num_clients <= high or clients_per_round != num_clients:
      raise ValueError(f'regime=cross_silo needs {low} <= num_clients <= {high} and clients_per_round=num_clients '
                       f'(full participation); got {clients_per_round} of {num_clients}.')
  elif regime != 'custom':
    raise ValueError(f"regime must be one of custom, cross_device, cross_silo; got '{regime}'.")


class AvailabilityHook(training_loop.RoundHook):
  """metrics.csv column regime/available: the population a sampler could draw from this round."""
  name = 'availability'

  def __init__(self, sampler):
    self.sampler = sampler

  def after_round(self, round_num, output, row) -> None:
    del round_num, output
    if hasattr(self.sampler, 'last_available'):
      row['regime/available'] = self.sampler.last_available


class RegimeHook(training_loop.RoundHook):
  """metrics.csv columns regime/sampled, regime/dropped, regime/stragglers, regime/partial, regime/reported of a
  participation with `round_num` and `stats` (`RegimeParticipation`); summary totals."""
  name = 'regime'

  def __init__(self, participation: RegimeParticipation):
    self.participation = participation
    self.totals = collections.Counter()

  def after_round(self, round_num, output, row) -> None:
    del output
    if self.participation.round_num == round_num:
      for key, value in self.participation.stats.items():
        row[f'regime/{key}'] = value
        self.totals[key] += value

  def checkpoint_arrays(self):
    keys = sorted(self.totals)
    return {'keys': np.array(keys, dtype=str), 'totals': np.array([self.totals[k] for k in keys], np.int64)}

  def restore_arrays(self, arrays) -> None:
    if 'keys' in arrays:
      self.totals = collections.Counter(dict(zip(arrays['keys'].tolist(), arrays['totals'].tolist())))

  def summary(self):
    return {f'regime_total_{k}': int(v) for k, v in self.totals.items()}
