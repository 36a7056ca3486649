"""Client samplers that own the dp-accounting description of their own sampling.

Each sampler picks the cohort of a round *and* states how that choice enters privacy accounting, so the
accountant can never assume a sampling scheme other than the one that ran:

* `PoissonSampler`: every client joins a round independently with probability `q`
  (`dp_accounting.PoissonSampledDpEvent`, add-or-remove-one adjacency).
* `FixedSizeSampler`: exactly `k` of the `n` clients, uniformly without replacement
  (`dp_accounting.SampledWithoutReplacementDpEvent`, replace-one adjacency; RDP only in dp-accounting 0.4.3).
* `CyclicSampler`: DP-FTRL's "no sampling": a fixed random partition of the clients into `n // k` cohorts
  visited in turn, so a client's participations are exactly `n // k` rounds apart. Accounted by the tree
  aggregation accountant (`tensorflow_privacy` / `dp_accounting`), for use with `--dp=tree` only.

Cohorts are a pure function of `(seed, round_num)`: resuming a run reproduces them.
"""

import abc
from collections.abc import Sequence
import math

import dp_accounting
import numpy as np

NeighboringRelation = dp_accounting.NeighboringRelation


def _check_cohort_size(clients_per_round, num_clients: int) -> int:
  if not isinstance(clients_per_round, (int, np.integer)) or not 1 <= clients_per_round <= num_clients:
    raise ValueError(f'clients_per_round must be an integer in [1, {num_clients}], got {clients_per_round!r}.')
  return int(clients_per_round)


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


class FixedSizeSampler(ClientSampler):
  """Exactly `clients_per_round` distinct clients per round, uniformly at random."""

  def __init__(self, num_clients: int, clients_per_round: int, seed: int = 0):
    super().__init__(num_clients, seed)
    self._k = _check_cohort_size(clients_per_round, num_clients)

  @property
  def expected_clients_per_round(self) -> float:
    return float(self._k)

  @property
  def neighboring_relation(self) -> NeighboringRelation:
    return NeighboringRelation.REPLACE_ONE

  def _choose(self, round_num):
    return np.sort(self._rng(round_num).choice(self._num_clients, size=self._k, replace=False))

  def round_event(self, mechanism):
    return dp_accounting.SampledWithoutReplacementDpEvent(
        source_dataset_size=self._num_clients, sample_size=self._k, event=mechanism)


class CyclicSampler(ClientSampler):
  """DP-FTRL without sampling: `num_clients // k` disjoint cohorts of size `k`, visited cyclically.

  Clients beyond `(num_clients // k) * k` in the (seeded) permutation never participate. A client takes part
  at most `ceil(rounds / cohorts_per_epoch)` times in `rounds` rounds, with `cohorts_per_epoch - 1` rounds
  between two participations; `tree_rdp` turns that into RDP for a single (never restarted) tree.
  """

  def __init__(self, num_clients: int, clients_per_round: int, seed: int = 0):
    super().__init__(num_clients, seed)
    self._k = _check_cohort_size(clients_per_round, num_clients)
    self._order = np.random.default_rng([self._seed, 2**32 - 1]).permutation(num_clients)

  @property
  def cohorts_per_epoch(self) -> int:
    return self._num_clients // self._k

  @property
  def expected_clients_per_round(self) -> float:
    return float(self._k)

  @property
  def neighboring_relation(self) -> NeighboringRelation:
    return NeighboringRelation.REPLACE_SPECIAL

  def _choose(self, round_num):
    start = (round_num % self.cohorts_per_epoch) * self._k
    return np.sort(self._order[start:start + self._k])

  def max_participations(self, rounds: int) -> int:
    return math.ceil(rounds / self.cohorts_per_epoch)

  def round_event(self, mechanism):
    raise ValueError('CyclicSampler has no per-round sampling event; it is accounted with tree_rdp (--dp=tree).')

  def dp_event(self, noise_multiplier, rounds):
    """Single-epoch tree event; only valid while no client has participated twice."""
    if self.max_participations(rounds) > 1:
      raise ValueError(f'rounds={rounds} exceeds one epoch ({self.cohorts_per_epoch} cohorts); use tree_rdp.')
    return dp_accounting.SingleEpochTreeAggregationDpEvent(noise_multiplier, int(rounds))

  def tree_rdp(self, noise_multiplier: float, rounds: int, orders: Sequence[float]) -> np.ndarray:
    """RDP at `orders` of `rounds` leaves of one tree (tensorflow-privacy's single-tree accountant)."""
    # pylint: disable=g-import-not-at-top
    from tensorflow_privacy.privacy.analysis import tree_aggregation_accountant
    return np.asarray(tree_aggregation_accountant.compute_rdp_single_tree(
        noise_multiplier, total_steps=int(rounds), max_participation=self.max_participations(rounds),
        min_separation=self.cohorts_per_epoch - 1, orders=list(orders)), dtype=np.float64)
