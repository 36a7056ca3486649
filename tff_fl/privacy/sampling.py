"""Client samplers that own the dp-accounting description of their own sampling.

Each sampler picks the cohort of a round *and* states how that choice enters privacy accounting, so the
accountant can never assume a sampling scheme other than the one that ran:

* `PoissonSampler`: every client joins a round independently with probability `q`
  (`dp_accounting.PoissonSampledDpEvent`, add-or-remove-one adjacency).
* `FixedSizeSampler`: exactly `k` of the `n` clients, uniformly without replacement
  (`dp_accounting.SampledWithoutReplacementDpEvent`, replace-one adjacency; RDP only in dp-accounting 0.4.3).
* `CyclicSampler`: DP-FTRL's "no sampling": a fixed random partition of the clients into `n // k` cohorts
  visited in turn (one epoch = one pass), accounted as one tree-aggregation event per epoch
  (`dp_accounting.SingleEpochTreeAggregationDpEvent`, replace-special adjacency; RDP only); `--dp=tree` only.

Cohorts are a pure function of `(seed, round_num)`: resuming a run reproduces them.
"""

import abc
from collections.abc import Sequence

import dp_accounting
import numpy as np

NeighboringRelation = dp_accounting.NeighboringRelation


class ClientSampler(abc.ABC):
  """Chooses each round's cohort from a fixed population of `num_clients` client ids."""

  def __init__(self, num_clients: int, seed: int = 0):
    if not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
      raise ValueError(f'num_clients must be a positive integer, got {num_clients!r}.')
    self._num_clients = int(num_clients)
    self._seed = int(seed)

  @property
  def num_clients(self) -> int:
    return self._num_clients

  @property
  @abc.abstractmethod
  def expected_clients_per_round(self) -> float:
    """Expected cohort size; the DP aggregator divides its noised sum by this."""

  @property
  @abc.abstractmethod
  def neighboring_relation(self) -> NeighboringRelation:
    """Adjacency under which this sampler's events are valid."""

  @abc.abstractmethod
  def _choose(self, round_num: int) -> np.ndarray:
    """Indices into the population for round `round_num` (sorted, without repeats)."""

  def _rng(self, round_num: int) -> np.random.Generator:
    return np.random.default_rng([self._seed, int(round_num)])

  def sample(self, round_num: int, client_ids: Sequence[str]) -> list[str]:
    """The cohort of round `round_num` (>= 0); `client_ids` is the whole population, in a fixed order."""
    if len(client_ids) != self._num_clients:
      raise ValueError(f'client_ids must list all {self._num_clients} clients the sampler was built for, '
                       f'got {len(client_ids)}.')
    if round_num < 0:
      raise ValueError(f'round_num must be >= 0, got {round_num}.')
    return [client_ids[i] for i in self._choose(int(round_num))]

  def dp_event(self, noise_multiplier: float, rounds: int) -> dp_accounting.DpEvent:
    """The `DpEvent` of `rounds` rounds of a Gaussian mechanism (noise multiplier z) on these cohorts."""
    return dp_accounting.SelfComposedDpEvent(
        self.round_event(dp_accounting.GaussianDpEvent(noise_multiplier)), int(rounds))

  @abc.abstractmethod
  def round_event(self, mechanism: dp_accounting.DpEvent) -> dp_accounting.DpEvent:
    """Wraps one round's mechanism event in this sampler's sampling event."""


class PoissonSampler(ClientSampler):
  """Each client joins independently with probability `rate`; cohorts may be empty."""

  def __init__(self, num_clients: int, rate: float, seed: int = 0):
    super().__init__(num_clients, seed)
    if not 0.0 < rate <= 1.0:
      raise ValueError(f'rate must be in (0, 1], got {rate!r}.')
    self._rate = float(rate)

  @property
  def rate(self) -> float:
    return self._rate

  @property
  def expected_clients_per_round(self) -> float:
    return self._rate * self._num_clients

  @property
  def neighboring_relation(self) -> NeighboringRelation:
    return NeighboringRelation.ADD_OR_REMOVE_ONE

  def _choose(self, round_num):
    return np.flatnonzero(self._rng(round_num).random(self._num_clients) < self._rate)

  def round_event(self, mechanism):
    return dp_accounting.PoissonSampledDpEvent(sampling_probability=self._rate, event=mechanism)


class _FixedCohortSampler(ClientSampler, abc.ABC):
  """Cohorts of exactly `clients_per_round` distinct clients."""

  def __init__(self, num_clients: int, clients_per_round: int, seed: int = 0):
    super().__init__(num_clients, seed)
    if not isinstance(clients_per_round, (int, np.integer)) or not 1 <= clients_per_round <= num_clients:
      raise ValueError(f'clients_per_round must be an integer in [1, {num_clients}], got {clients_per_round!r}.')
    self._k = int(clients_per_round)

  @property
  def expected_clients_per_round(self) -> float:
    return float(self._k)


class FixedSizeSampler(_FixedCohortSampler):
  """Exactly `clients_per_round` distinct clients per round, uniformly at random."""

  @property
  def neighboring_relation(self) -> NeighboringRelation:
    return NeighboringRelation.REPLACE_ONE

  def _choose(self, round_num):
    return np.sort(self._rng(round_num).choice(self._num_clients, size=self._k, replace=False))

  def round_event(self, mechanism):
    return dp_accounting.SampledWithoutReplacementDpEvent(
        source_dataset_size=self._num_clients, sample_size=self._k, event=mechanism)


class CyclicSampler(_FixedCohortSampler):
  """DP-FTRL without sampling: `num_clients // k` disjoint cohorts of size `k`, visited cyclically.

  One pass over the cohorts is an epoch; clients beyond `(num_clients // k) * k` in the (seeded) permutation
  never participate. Every client is in at most one cohort per epoch, so with the tree restarted at each
  epoch boundary (`build_dp_aggregator(..., tree_restart_rounds=cohorts_per_epoch)`) the run is one
  `SingleEpochTreeAggregationDpEvent` per epoch (Kairouz et al. 2021, appendix D).
  """

  def __init__(self, num_clients: int, clients_per_round: int, seed: int = 0):
    super().__init__(num_clients, clients_per_round, seed)
    self._order = np.random.default_rng([self._seed, 2**32 - 1]).permutation(num_clients)

  @property
  def cohorts_per_epoch(self) -> int:
    """Rounds per epoch; the tree aggregator must restart after every this many rounds."""
    return self._num_clients // self._k

  @property
  def neighboring_relation(self) -> NeighboringRelation:
    return NeighboringRelation.REPLACE_SPECIAL

  def _choose(self, round_num):
    start = (round_num % self.cohorts_per_epoch) * self._k
    return np.sort(self._order[start:start + self._k])

  def round_event(self, mechanism):
    raise ValueError('CyclicSampler has no per-round sampling event; its rounds are accounted per epoch.')

  def dp_event(self, noise_multiplier, rounds):
    """One tree per (possibly partial) epoch; each client contributes at most once to each tree."""
    full_epochs, rest = divmod(int(rounds), self.cohorts_per_epoch)
    tree = lambda steps: dp_accounting.SingleEpochTreeAggregationDpEvent(noise_multiplier, steps)
    events = [dp_accounting.SelfComposedDpEvent(tree(self.cohorts_per_epoch), full_epochs)] if full_epochs else []
    return dp_accounting.ComposedDpEvent(events + ([tree(rest)] if rest else []))
