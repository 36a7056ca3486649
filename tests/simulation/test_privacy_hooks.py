"""PrivacyHook driven the way `training_loop.run_training` drives hooks (stop_before, after_round, on_train_end)."""

import collections
import math

import pytest

from tff_fl.privacy import accounting
from tff_fl.privacy import plan as plan_lib
from tff_fl.simulation import privacy_hooks as hooks

IDS = [f'c{i}' for i in range(50)]


def _run(hook, sampler, total_rounds, start_round=0):
  """The hook protocol of run_training: rounds are 1-based; stop_before runs before sampling."""
  rows, round_num, stop = [], start_round, 'completed'
  for round_num in range(start_round + 1, total_rounds + 1):
    reason = hook.stop_before(round_num)
    if reason:
      stop, round_num = reason, round_num - 1
      break
    row = collections.OrderedDict(round=round_num, clients=len(sampler.sample(round_num)))
    hook.after_round(round_num, None, row)
    rows.append(row)
  summary = collections.OrderedDict(rounds_completed=round_num, stop_reason=stop)
  hook.on_train_end(None, None, summary)
  return rows, summary


def test_budget_stops_before_the_first_round_over_target_epsilon():
  plan = plan_lib.build_client_dp_plan('fixed', len(IDS), 10, noise_multiplier=1.0, client_sampling='poisson',
                                       target_delta=1e-5, target_epsilon=4.0)
  expected_rounds = plan.rounds_within_budget(4.0, 1e-5)
  sampler = hooks.BoundSampler(plan, IDS)
  rows, summary = _run(hooks.PrivacyHook(plan, sampler), sampler, total_rounds=expected_rounds + 10)
  assert len(rows) == summary['rounds_completed'] == expected_rounds
  assert all(row['epsilon'] <= 4.0 for row in rows)
  assert [row['epsilon'] for row in rows] == [plan.epsilon(t) for t in range(1, expected_rounds + 1)]
  assert summary['epsilon'] == rows[-1]['epsilon'] and summary['privacy_budget_exhausted']
  assert f'stopping after {expected_rounds} rounds' in summary['privacy_stop_message']
  assert summary['rounds_within_budget'] == expected_rounds and summary['privacy']['dp'] == 'fixed'


def test_no_budget_runs_all_rounds_and_no_dp_reports_no_finite_epsilon():
  plan = plan_lib.build_client_dp_plan('none', len(IDS), 5)
  sampler = hooks.BoundSampler(plan, IDS)
  rows, summary = _run(hooks.PrivacyHook(plan, sampler), sampler, total_rounds=4)
  assert len(rows) == 4 and all(math.isinf(r['epsilon']) for r in rows)
  assert summary['epsilon'] is None and not summary['privacy_budget_exhausted']


def test_example_epsilon_follows_the_most_sampled_client_and_survives_resume():
  plan = plan_lib.build_client_dp_plan('none', len(IDS), 5, seed=3)
  sampler = hooks.BoundSampler(plan, IDS)
  counts = collections.Counter(c for r in range(1, 9) for c in sampler.sample(r))
  expected = accounting.example_level_epsilon(3.0, max(counts.values()) * 2, 1e-5)
  full = hooks.PrivacyHook(plan, sampler, plan_lib.SampleLevelAccountant(3.0, local_epochs=2))
  rows, summary = _run(full, sampler, total_rounds=8)
  assert rows[-1]['example_epsilon'] == pytest.approx(expected, rel=1e-12) == summary['example_epsilon']
  resumed = hooks.PrivacyHook(plan, sampler, plan_lib.SampleLevelAccountant(3.0, local_epochs=2))
  rows_after_resume, _ = _run(resumed, sampler, total_rounds=8, start_round=5)
  assert rows_after_resume[-1]['example_epsilon'] == rows[-1]['example_epsilon']


def test_sample_level_needs_the_sampler():
  plan = plan_lib.build_client_dp_plan('none', len(IDS), 5)
  with pytest.raises(ValueError, match='sampler'):
    hooks.PrivacyHook(plan, None, plan_lib.SampleLevelAccountant(1.0, 1))
