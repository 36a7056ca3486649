"""FedProx's systems heterogeneity (Li et al. 2020, Sec. 5.2), a participation like `regimes.RegimeParticipation`.

Each round exactly `len(cohort) - round(len(cohort) * (1 - fraction))` of the sampled clients are stragglers (as the
FedProx code's `active_clients`, at least one client stays active); a straggler manages k local epochs,
k ~ U{1, ..., E - 1} ("a random number of epochs in [1, E)"). Policy 'drop' (FedAvg in the paper) discards the
stragglers; 'partial' (FedProx) keeps the work they finished: the first ceil(k * n / B) batches of their usual
E-epoch dataset (batched across epoch boundaries), i.e. k passes over their n examples rounded up to a whole batch.
Draws depend only on (seed, round), so a resumed run sees the same stragglers.

This differs from `regimes.Participation` (each client straggles independently with probability `fraction` and
finishes a uniform share of its steps); `FedProxStragglers` is a `regimes.RegimeParticipation` with this plan, so
it returns the round's `tff_fl.engine.Cohort` and `regimes.RegimeHook` reports its `regime/*` columns.
"""

import math
from typing import Sequence

import numpy as np

from tff_fl import tasks as tasks_lib
from tff_fl.simulation import regimes
from tff_fl.simulation import training_loop

_STREAM = 0x5752  # Separates these draws from the sampler's np.random.default_rng([seed, round]).


def num_stragglers(cohort_size: int, fraction: float) -> int:
  """cohort - round(cohort * (1 - fraction)) (Python rounding, as FedProx), leaving >= 1 active client."""
  return min(cohort_size - int(round(cohort_size * (1.0 - fraction))), max(cohort_size - 1, 0))


def straggler_epochs(seed: int, round_num: int, cohort: Sequence[str], fraction: float,
                     epochs: int) -> dict[str, int]:
  """client id -> epochs it finishes, for the stragglers of this round only (each in [1, epochs))."""
  rng = np.random.default_rng([seed, round_num, _STREAM])
  count = num_stragglers(len(cohort), fraction)
  chosen = rng.choice(len(cohort), size=count, replace=False) if count else np.zeros(0, np.int64)
  return {cohort[i]: int(rng.integers(1, epochs)) for i in sorted(chosen)}


class FedProxStragglers(regimes.RegimeParticipation):
  """Participation `(round, sampled) -> engine.Cohort` with FedProx's stragglers; `stats` as in
  `RegimeParticipation` (dropped is always 0)."""

  def __init__(self, task: tasks_lib.Task, cfg: training_loop.LoopConfig, fraction: float, policy: str):
    super().__init__(task, cfg, regimes.Participation(straggler_fraction=fraction, straggler_policy=policy,
                                                      seed=cfg.seed))
    if fraction > 0 and cfg.client_epochs_per_round < 2:
      raise ValueError('straggler_model=fedprox needs client_epochs_per_round >= 2 (stragglers run a random '
                       f'number of epochs in [1, E)); got {cfg.client_epochs_per_round}.')
    self.fraction, self.policy = fraction, policy

  def plan(self, round_num: int, cohort: Sequence[str]) -> list[regimes.ClientFate]:
    cohort = list(cohort)
    late = straggler_epochs(self.cfg.seed, round_num, cohort, self.fraction, self.cfg.client_epochs_per_round)
    sizes = self.task.data.num_examples('train')
    fates = []
    for cid in cohort:
      if cid not in late:
        fates.append(regimes.ClientFate(cid, False, False, None, True))
      elif self.policy == 'partial':
        steps = math.ceil(late[cid] * sizes[cid] / self.cfg.client_batch_size)
        fates.append(regimes.ClientFate(cid, False, True, steps, True))
      else:
        fates.append(regimes.ClientFate(cid, False, True, None, False))
    return fates
