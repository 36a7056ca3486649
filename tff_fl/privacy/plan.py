"""Flag values -> one object that samples cohorts, builds the DP aggregator and reports/limits epsilon.

`build_client_dp_plan` is the single place where `--dp`, `--client_sampling` and `--accountant` meet, and it
refuses every combination whose accounting would not describe what runs:

  --dp=fixed|adaptive   needs --client_sampling=uniform (fixed-size; RDP only) or poisson (RDP or PLD)
  --dp=tree             needs --client_sampling=cyclic (DP-FTRL, no sampling; RDP only)
  --dp=none             any sampling; epsilon is reported as inf; --target_epsilon is refused

Sample-level DP (local DP-SGD) is accounted separately by `SampleLevelAccountant`.
"""

import collections
from collections.abc import Callable, Sequence
import dataclasses
import math
from typing import Optional

from tff_fl.aggregators import privacy as dp_aggregators
from tff_fl.privacy import accounting
from tff_fl.privacy import budget as budget_lib
from tff_fl.privacy import sampling

CLIENT_SAMPLING = ('uniform', 'poisson', 'cyclic')


@dataclasses.dataclass
class ClientDPPlan:
  """Sampler + DP aggregator + accountant + budget of one run. `accountant` is None iff dp == 'none'."""
  dp: str
  noise_multiplier: float
  clip_norm: float
  target_unclipped_quantile: float
  sampler: sampling.ClientSampler
  accountant: Optional[accounting.ClientLevelAccountant]
  budget: budget_lib.PrivacyBudget
  accountant_kind: str
  client_sampling: str
  secure_bits: Optional[int] = None

  def sample(self, round_num: int, client_ids: Sequence[str]) -> list[str]:
    """Cohort of round `round_num` (0-based) drawn from the full, fixed-order population `client_ids`."""
    return self.sampler.sample(round_num, client_ids)

  def epsilon(self, rounds_completed: int, target_delta: Optional[float] = None) -> float:
    """Client-level epsilon after `rounds_completed` rounds (inf without DP, 0 before the first round)."""
    delta = self.budget.target_delta if target_delta is None else target_delta
    return (self.accountant or _NoPrivacy()).epsilon(rounds_completed, delta)

  def rounds_within_budget(self, target_epsilon: float, target_delta: float, max_rounds: int = 10**6) -> int:
    if self.accountant is None:
      return 0
    return self.accountant.rounds_within_budget(target_epsilon, target_delta, max_rounds)

  def can_run_next_round(self, rounds_completed: int) -> bool:
    return self.budget.can_run_next_round(rounds_completed)

  @property
  def epsilon_is_approximate(self) -> bool:
    """True for distributed DP (secure_bits): accounted as a Gaussian, rounding inflation not included."""
    return self.secure_bits is not None

  def build_aggregator(self, model_fn: Optional[Callable[[], object]] = None, noise_seed: Optional[int] = None):
    """The `tff.aggregators` factory for the model update (None for dp='none'); tree needs `model_fn`.
    `noise_seed`: reproducible noise (see `aggregators.privacy.build_dp_aggregator`); None = nondeterministic."""
    tree = dict(record_specs=dp_aggregators.model_trainable_specs(model_fn) if model_fn else None,
                tree_restart_rounds=self.sampler.cohorts_per_epoch) if self.dp == 'tree' else {}
    return dp_aggregators.build_dp_aggregator(
        self.dp, self.noise_multiplier, self.clip_norm, self.sampler.expected_clients_per_round,
        self.target_unclipped_quantile, secure_bits=self.secure_bits, noise_seed=noise_seed, **tree)

  def summary(self) -> collections.OrderedDict:
    """JSON-ready description for summary.json."""
    return collections.OrderedDict(
        dp=self.dp, noise_multiplier=self.noise_multiplier, clip_norm=self.clip_norm,
        client_sampling=self.client_sampling,
        expected_clients_per_round=self.sampler.expected_clients_per_round,
        accountant=self.accountant_kind if self.accountant else None,
        neighboring_relation=self.sampler.neighboring_relation.name if self.accountant else None,
        target_delta=self.budget.target_delta, target_epsilon=self.budget.target_epsilon,
        secure_bits=self.secure_bits, epsilon_is_approximate=self.epsilon_is_approximate)


def build_client_dp_plan(dp: str, num_clients: int, clients_per_round: int, *, noise_multiplier: float = 0.0,
                         clip_norm: float = 1.0, target_unclipped_quantile: float = 0.5,
                         client_sampling: str = 'uniform', accountant: str = 'rdp', target_delta: float = 1e-5,
                         target_epsilon: Optional[float] = None, secure_bits: Optional[int] = None,
                         seed: int = 0) -> ClientDPPlan:
  """Validates the flag combination and builds the plan (see the module docstring for the rules)."""
  if dp not in dp_aggregators.DP_MODES:
    raise ValueError(f'dp must be one of {"|".join(dp_aggregators.DP_MODES)}, got {dp!r}.')
  if client_sampling not in CLIENT_SAMPLING:
    raise ValueError(f'client_sampling must be one of {"|".join(CLIENT_SAMPLING)}, got {client_sampling!r}.')
  if accountant not in accounting.ACCOUNTANTS:
    raise ValueError(f'accountant must be one of {"|".join(accounting.ACCOUNTANTS)}, got {accountant!r}.')
  if dp == 'tree' and client_sampling != 'cyclic':
    raise ValueError(f'dp=tree needs client_sampling=cyclic (DP-FTRL accounting assumes no sampling), '
                     f'got {client_sampling!r}.')
  if dp in ('fixed', 'adaptive') and client_sampling == 'cyclic':
    raise ValueError(f'client_sampling=cyclic is only accounted for dp=tree, got dp={dp}.')
  if dp != 'none' and accountant == 'pld' and client_sampling != 'poisson':
    raise ValueError(f'accountant=pld supports only client_sampling=poisson (dp-accounting 0.4.3 has no '
                     f'PLD for {client_sampling} sampling); use accountant=rdp.')
  if dp == 'none' and target_epsilon is not None:
    raise ValueError('target_epsilon needs dp=fixed|adaptive|tree (without DP epsilon is infinite).')

  if client_sampling == 'poisson':
    if not isinstance(clients_per_round, (int, float)) or not 0 < clients_per_round <= num_clients:
      raise ValueError(f'clients_per_round must be in (0, num_clients={num_clients}], got {clients_per_round!r}.')
    sampler = sampling.PoissonSampler(num_clients, clients_per_round / num_clients, seed)
  elif client_sampling == 'uniform':
    sampler = sampling.FixedSizeSampler(num_clients, clients_per_round, seed)
  else:
    sampler = sampling.CyclicSampler(num_clients, clients_per_round, seed)

  acc = None
  if dp != 'none':
    dp_aggregators.validate_dp_flags(dp, noise_multiplier, clip_norm, sampler.expected_clients_per_round,
                                     target_unclipped_quantile, secure_bits)
    acc = accounting.ClientLevelAccountant(sampler, noise_multiplier, 'tree' if dp == 'tree' else 'gaussian',
                                           accountant)
  budget = budget_lib.PrivacyBudget(acc or _NoPrivacy(), target_delta, target_epsilon)
  return ClientDPPlan(dp, float(noise_multiplier), float(clip_norm), float(target_unclipped_quantile), sampler,
                      acc, budget, accountant, client_sampling, secure_bits)


class _NoPrivacy:

  def epsilon(self, rounds: int, target_delta: float) -> float:
    del target_delta
    return 0.0 if rounds == 0 else math.inf


class SampleLevelAccountant:
  """Example-level epsilon of local DP-SGD: each client's examples, over every round that client joined."""

  def __init__(self, noise_multiplier: float, local_epochs: float, accountant: str = 'rdp'):
    if not local_epochs > 0:
      raise ValueError(f'local_epochs must be positive, got {local_epochs!r}.')
    self.noise_multiplier = float(noise_multiplier)
    self.local_epochs = float(local_epochs)
    self.accountant = accountant
    self.participations: collections.Counter = collections.Counter()

  def record(self, cohort: Sequence[str]) -> None:
    """Call once per round with the cohort that trained."""
    self.participations.update(cohort)

  def epsilon(self, target_delta: float) -> float:
    """Worst case over clients: example-level epsilon of the most frequently sampled client so far."""
    most = max(self.participations.values(), default=0)
    return accounting.example_level_epsilon(self.noise_multiplier, most * self.local_epochs, target_delta,
                                            self.accountant)
