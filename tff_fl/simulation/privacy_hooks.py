"""Training-loop glue: the plan's sampler in the loop's interface, and a `RoundHook` for epsilon and the budget.

`PrivacyHook` adds `epsilon` (client level, at `--target_delta`) to every metrics row, stops the loop *before*
a round that would take epsilon past `--target_epsilon` (so no model past the budget is computed or released),
and writes `epsilon`, the budget outcome and the plan to summary.json. With sample-level DP it also reports
`example_epsilon`: the example-level epsilon of the most frequently sampled client, whose participation count
is replayed from the (deterministic) sampler, so a resumed run needs no extra checkpoint state.
"""

import collections
import math
from collections.abc import Sequence
from typing import Any, Optional

from tff_fl.privacy import plan as plan_lib
from tff_fl.simulation import training_loop


class BoundSampler:
  """`sample(round_num) -> list[str]` over a fixed population, as `training_loop.run_training` expects."""

  def __init__(self, plan: plan_lib.ClientDPPlan, client_ids: Sequence[str]):
    self._plan = plan
    self.client_ids = list(client_ids)

  def sample(self, round_num: int) -> list[str]:
    return self._plan.sample(round_num, self.client_ids)


def _json_number(x: float) -> Optional[float]:
  return x if math.isfinite(x) else None  # JSON has no inf: None means "no finite guarantee".


class PrivacyHook(training_loop.RoundHook):
  """Reports epsilon every round and enforces `plan.budget` (see the module docstring)."""
  name = 'privacy'

  def __init__(self, plan: plan_lib.ClientDPPlan, sampler: Optional[BoundSampler] = None,
               sample_level: Optional[plan_lib.SampleLevelAccountant] = None):
    if sample_level is not None and sampler is None:
      raise ValueError('sample_level accounting needs the sampler that picks the cohorts.')
    self._plan = plan
    self._sampler = sampler
    self._sample_level = sample_level
    self._counted_through = 0
    self._stop_reason = None

  def stop_before(self, round_num: int) -> Optional[str]:
    if self._plan.can_run_next_round(round_num - 1):
      return None
    self._stop_reason = self._plan.budget.stop_message(round_num - 1)
    return self._stop_reason

  def _example_epsilon(self, round_num: int) -> float:
    for r in range(self._counted_through + 1, round_num + 1):
      self._sample_level.record(self._sampler.sample(r))
    self._counted_through = max(self._counted_through, round_num)
    return self._sample_level.epsilon(self._plan.budget.target_delta)

  def after_round(self, round_num: int, output, row: dict[str, Any]) -> None:
    del output
    row['epsilon'] = self._plan.epsilon(round_num)
    if self._sample_level is not None:
      row['example_epsilon'] = self._example_epsilon(round_num)

  def on_train_end(self, process, state, summary: dict[str, Any]) -> None:
    del process, state
    rounds = int(summary.get('rounds_completed', 0))
    budget = self._plan.budget
    extra = collections.OrderedDict(
        epsilon=_json_number(self._plan.epsilon(rounds)), target_delta=budget.target_delta,
        target_epsilon=budget.target_epsilon, privacy_budget_exhausted=self._stop_reason is not None,
        privacy_stop_message=self._stop_reason, privacy=self._plan.summary())
    if budget.target_epsilon is not None:
      extra['rounds_within_budget'] = budget.rounds_within_budget()
    if self._sample_level is not None:
      extra['example_epsilon'] = _json_number(self._example_epsilon(rounds)) if rounds else 0.0
    summary.update(extra)
