"""Privacy accounting with dp-accounting (RDP, PLD) and tensorflow-privacy's tree accountant.

Three guarantees are computed here, all (epsilon, delta)-DP:

* `dp_sgd_epsilon`: centralized DP-SGD with Poisson-sampled batches, exactly as tensorflow-privacy's
  `compute_dp_sgd_privacy` (same RDP orders, same event) and optionally with the PLD accountant.
* `example_level_epsilon`: sample-level DP of one client running DP-SGD over shuffled fixed-size batches
  (no amplification by sampling; each example is in one batch per epoch), following tensorflow-privacy's
  `compute_dp_sgd_privacy_statement` convention that microbatching doubles the sensitivity.
* `ClientLevelAccountant`: client-level DP of DP-FedAvg / DP-FTRL. The sampling event comes from the
  `ClientSampler` that picks the cohorts, so sampling and accounting cannot disagree. Per-round RDP and the
  one-round PLD are computed once and composed per query, so reporting epsilon every round is cheap.
"""

from collections.abc import Sequence
import functools
import math
from typing import Optional

import dp_accounting
from dp_accounting import pld
from dp_accounting import rdp
import numpy as np

from tff_fl.privacy import budget
from tff_fl.privacy import sampling

ACCOUNTANTS = ('rdp', 'pld')
MECHANISMS = ('gaussian', 'tree')
# The RDP orders of tensorflow-privacy's `compute_dp_sgd_privacy` (published epsilons use these).
TFP_DP_SGD_ORDERS = tuple([1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5] + list(range(5, 64)) + [128, 256, 512])
DEFAULT_ORDERS = tuple(rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS)
PLD_DISCRETIZATION = 1e-4  # PLDAccountant's default value_discretization_interval.


def _check_choice(value, allowed, name):
  if value not in allowed:
    raise ValueError(f'{name} must be one of {"|".join(allowed)}, got {value!r}.')


def _check_nonnegative(value, name):
  if not isinstance(value, (int, float, np.number)) or not value >= 0:
    raise ValueError(f'{name} must be a non-negative number, got {value!r}.')


def _check_delta(delta):
  if not 0.0 < delta < 1.0:
    raise ValueError(f'target_delta must be in (0, 1), got {delta!r}.')


def make_accountant(accountant: str,
                    neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
                    orders: Optional[Sequence[float]] = None) -> dp_accounting.PrivacyAccountant:
  """A fresh dp-accounting accountant: 'rdp' (at `orders`) or 'pld'."""
  _check_choice(accountant, ACCOUNTANTS, 'accountant')
  if accountant == 'rdp':
    return rdp.RdpAccountant(orders=list(orders or DEFAULT_ORDERS), neighboring_relation=neighboring_relation)
  return pld.PLDAccountant(neighboring_relation=neighboring_relation,
                           value_discretization_interval=PLD_DISCRETIZATION)


def dp_sgd_epsilon(num_examples: int, batch_size: int, noise_multiplier: float, epochs: float,
                   target_delta: float, accountant: str = 'rdp',
                   orders: Sequence[float] = TFP_DP_SGD_ORDERS) -> tuple[float, Optional[float]]:
  """(epsilon, optimal RDP order or None for PLD) of Poisson-sampled DP-SGD with q = batch_size / num_examples."""
  if not 0 < batch_size <= num_examples:
    raise ValueError(f'batch_size must be in [1, num_examples={num_examples}], got {batch_size!r}.')
  _check_nonnegative(noise_multiplier, 'noise_multiplier')
  _check_delta(target_delta)
  q = batch_size / num_examples
  steps = int(math.ceil(epochs * num_examples / batch_size))
  event = dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)
  acc = make_accountant(accountant, orders=orders).compose(event)
  if accountant == 'rdp':
    eps, order = acc.get_epsilon_and_optimal_order(target_delta)
    return float(eps), float(order)
  return float(acc.get_epsilon(target_delta)), None


def example_level_epsilon(noise_multiplier: float, epochs: float, target_delta: float,
                          accountant: str = 'rdp', used_microbatching: bool = True) -> float:
  """Example-level epsilon after `epochs` passes of DP-SGD over shuffled batches (no sampling amplification).

  For a federated client, `epochs` = local epochs per round x rounds the client took part in.
  """
  _check_nonnegative(noise_multiplier, 'noise_multiplier')
  _check_delta(target_delta)
  if epochs <= 0:
    return 0.0
  z = noise_multiplier / 2 if used_microbatching else noise_multiplier
  if z == 0:
    return math.inf
  event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), int(math.ceil(epochs)))
  return float(make_accountant(accountant).compose(event).get_epsilon(target_delta))


class ClientLevelAccountant:
  """Client-level epsilon of `rounds` rounds of a DP aggregator fed by `sampler`'s cohorts.

  `mechanism='gaussian'` (DP-FedAvg with fixed or adaptive clipping; TFF calibrates adaptive clipping so the
  total noise multiplier, value and clipped-count noise together, is `noise_multiplier`) needs a Poisson or
  fixed-size sampler; `mechanism='tree'` (DP-FTRL, tree restarted every epoch) needs a `CyclicSampler` and the
  RDP accountant.
  """

  def __init__(self, sampler: sampling.ClientSampler, noise_multiplier: float, mechanism: str = 'gaussian',
               accountant: str = 'rdp', orders: Optional[Sequence[float]] = None):
    _check_nonnegative(noise_multiplier, 'noise_multiplier')
    _check_choice(mechanism, MECHANISMS, 'mechanism')
    _check_choice(accountant, ACCOUNTANTS, 'accountant')
    is_cyclic = isinstance(sampler, sampling.CyclicSampler)
    if (mechanism == 'tree') != is_cyclic:
      raise ValueError('tree aggregation is accounted only with cyclic client sampling (DP-FTRL), and cyclic '
                       f'sampling only with tree aggregation; got mechanism={mechanism!r}, '
                       f'sampler={type(sampler).__name__}.')
    if accountant == 'pld' and not isinstance(sampler, sampling.PoissonSampler):
      raise ValueError(f'accountant=pld supports only Poisson client sampling in dp-accounting 0.4.3 '
                       f'(no fixed-size or tree events); use accountant=rdp with {type(sampler).__name__}.')
    self._sampler = sampler
    self._z = float(noise_multiplier)
    self._mechanism = mechanism
    self._accountant = accountant
    self._orders = tuple(orders or DEFAULT_ORDERS)

  @property
  def sampler(self) -> sampling.ClientSampler:
    return self._sampler

  @property
  def noise_multiplier(self) -> float:
    return self._z

  def sample(self, round_num: int, client_ids: Sequence[str]) -> list[str]:
    """The cohort of round `round_num`, from the sampler this accountant accounts for."""
    return self._sampler.sample(round_num, client_ids)

  @functools.cached_property
  def _rdp_per_round(self) -> np.ndarray:
    acc = make_accountant('rdp', self._sampler.neighboring_relation, self._orders)
    return acc.compose(self._sampler.dp_event(self._z, 1)).rdp

  @functools.cached_property
  def _pld_per_round(self):
    """The PLD `PLDAccountant` builds for one Poisson-sampled Gaussian round (built once: ~2 s)."""
    event = self._sampler.round_event(dp_accounting.GaussianDpEvent(self._z))
    return pld.privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=event.event.noise_multiplier, sampling_prob=event.sampling_probability,
        value_discretization_interval=PLD_DISCRETIZATION)

  @functools.lru_cache(maxsize=4096)
  def epsilon(self, rounds: int, target_delta: float) -> float:
    """Epsilon at `target_delta` after `rounds` completed rounds (0 -> 0.0; inf if noise_multiplier is 0)."""
    _check_delta(target_delta)
    if rounds < 0:
      raise ValueError(f'rounds must be >= 0, got {rounds!r}.')
    if rounds == 0:
      return 0.0
    if self._z == 0:
      return math.inf
    if self._accountant == 'pld':  # = PLDAccountant().compose(SelfComposedDpEvent(round_event, rounds))
      return float(self._pld_per_round.self_compose(rounds).get_epsilon_for_delta(target_delta))
    if self._mechanism == 'tree':
      acc = make_accountant('rdp', self._sampler.neighboring_relation, self._orders)
      rdp_values = acc.compose(self._sampler.dp_event(self._z, rounds)).rdp
    else:
      rdp_values = rounds * self._rdp_per_round  # What SelfComposedDpEvent(count=rounds) composes.
    return float(rdp.compute_epsilon(self._orders, rdp_values, target_delta)[0])

  def rounds_within_budget(self, target_epsilon: float, target_delta: float, max_rounds: int = 10**6) -> int:
    """The largest number of rounds whose epsilon at `target_delta` is <= `target_epsilon` (capped)."""
    return budget.max_rounds_within(lambda t: self.epsilon(t, target_delta), target_epsilon, max_rounds)
