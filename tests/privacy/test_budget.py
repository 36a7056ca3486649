"""Budget: the search and the per-round stop agree with a brute-force scan of a real accountant."""

import math

import pytest

from tff_fl.privacy import accounting
from tff_fl.privacy import budget
from tff_fl.privacy import sampling


def _brute_force_rounds(epsilon_fn, target, limit):
  t = 0
  while t < limit and epsilon_fn(t + 1) <= target:
    t += 1
  return t


@pytest.mark.parametrize('target', [0.5, 1.0, 3.0])  # 6, 212 and 1861 rounds.
def test_rounds_within_budget_equals_linear_scan(target):
  acc = accounting.ClientLevelAccountant(sampling.PoissonSampler(1000, 0.02), 1.5)
  expected = _brute_force_rounds(lambda t: acc.epsilon(t, 1e-5), target, 5000)
  assert 0 < expected < 5000
  assert acc.rounds_within_budget(target, 1e-5) == expected
  assert acc.epsilon(expected, 1e-5) <= target < acc.epsilon(expected + 1, 1e-5)


def test_training_loop_stops_before_the_round_that_would_exceed_the_budget():
  acc = accounting.ClientLevelAccountant(sampling.FixedSizeSampler(200, 10), 1.2)
  plan_budget = budget.PrivacyBudget(acc, target_delta=1e-5, target_epsilon=2.0)
  completed, released = 0, []
  while plan_budget.can_run_next_round(completed) and completed < 10_000:
    completed += 1  # "Run" the round, then release its model with its epsilon.
    released.append(plan_budget.epsilon(completed))
  assert max(released) <= 2.0  # No model past the budget was released.
  assert plan_budget.epsilon(completed + 1) > 2.0  # And the loop did not stop early.
  assert completed == plan_budget.rounds_within_budget()
  assert 'stopping after' in plan_budget.stop_message(completed) and '\n' not in plan_budget.stop_message(completed)


def test_max_rounds_within_on_synthetic_curves():
  assert budget.max_rounds_within(lambda t: t / 10, 0.35, 100) == 3
  assert budget.max_rounds_within(lambda t: t / 10, 0.05, 100) == 0  # Not even one round fits.
  assert budget.max_rounds_within(lambda t: math.log1p(t), 50.0, 1000) == 1000  # Capped.
  assert budget.max_rounds_within(lambda t: t / 10, 1.0, 10) == 10  # Exactly at the cap.
  assert budget.max_rounds_within(lambda t: t / 10, 0.7, 7) == 7
  for cap in range(1, 40):
    for target in (0.15, 1.0, 2.55):
      assert budget.max_rounds_within(lambda t: t / 10, target, cap) == min(cap, int(target * 10 + 1e-9))


def test_no_target_epsilon_never_stops():
  plan_budget = budget.PrivacyBudget(accounting.ClientLevelAccountant(sampling.PoissonSampler(10, 0.5), 0.5),
                                     target_delta=1e-5)
  assert plan_budget.can_run_next_round(10**6)
  assert plan_budget.rounds_within_budget() is None


@pytest.mark.parametrize('kwargs, match', [
    (dict(target_delta=0.0), 'target_delta'),
    (dict(target_delta=1e-5, target_epsilon=-1.0), 'target_epsilon'),
])
def test_bad_budget(kwargs, match):
  with pytest.raises(ValueError, match=match):
    budget.PrivacyBudget(accounting.ClientLevelAccountant(sampling.PoissonSampler(10, 0.5), 1.0), **kwargs)
