"""Flag wiring: refused combinations, and the plan's epsilon equals the matching dp-accounting computation."""

import math

import dp_accounting
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.privacy import accounting
from tff_fl.privacy import plan as plan_lib
from tff_fl.privacy import sampling

IDS = [str(i) for i in range(100)]


@pytest.mark.parametrize('kwargs, match', [
    (dict(dp='tree', client_sampling='uniform'), '^dp=tree needs client_sampling=cyclic'),
    (dict(dp='fixed', client_sampling='cyclic'), 'only accounted for dp=tree'),
    (dict(dp='fixed', client_sampling='uniform', accountant='pld'), '^accountant=pld supports only'),
    (dict(dp='tree', client_sampling='cyclic', accountant='pld'), '^accountant=pld supports only'),
    (dict(dp='none', target_epsilon=1.0), '^target_epsilon needs'),
    (dict(dp='gauss'), '^dp must be one of'),
    (dict(client_sampling='random'), '^client_sampling must be one of'),
    (dict(accountant='gdp'), '^accountant must be one of'),
    (dict(dp='fixed', clip_norm=-1.0), 'clip_norm'),
    (dict(dp='tree', client_sampling='cyclic', secure_bits=12), 'secure_bits composes only'),
])
def test_inconsistent_flags_are_refused_with_one_line(kwargs, match):
  args = dict(dp='fixed', num_clients=100, clients_per_round=10, noise_multiplier=1.0)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match) as info:
    plan_lib.build_client_dp_plan(**args)
  assert '\n' not in str(info.value)


@pytest.mark.parametrize('client_sampling, accountant, expected_event', [
    ('poisson', 'rdp', dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.0))),
    ('uniform', 'rdp', dp_accounting.SampledWithoutReplacementDpEvent(100, 10, dp_accounting.GaussianDpEvent(1.0))),
])
def test_plan_epsilon_is_the_sampled_event(client_sampling, accountant, expected_event):
  plan = plan_lib.build_client_dp_plan('fixed', 100, 10, noise_multiplier=1.0, client_sampling=client_sampling,
                                       accountant=accountant, target_delta=1e-5)
  relation = plan.sampler.neighboring_relation
  direct = accounting.make_accountant(accountant, relation).compose(
      dp_accounting.SelfComposedDpEvent(expected_event, 20)).get_epsilon(1e-5)
  assert plan.epsilon(20) == pytest.approx(direct, rel=1e-6)
  assert plan.epsilon(20, 1e-5) == plan.epsilon(20)
  cohort = plan.sample(3, IDS)
  assert set(cohort) <= set(IDS) and (client_sampling == 'poisson' or len(cohort) == 10)
  assert plan.summary()['accountant'] == accountant


def test_budget_and_rounds_within_budget_agree():
  plan = plan_lib.build_client_dp_plan('adaptive', 1000, 50, noise_multiplier=1.0, client_sampling='poisson',
                                       target_delta=1e-5, target_epsilon=3.0)
  t = plan.rounds_within_budget(3.0, 1e-5)
  assert t > 0 and plan.can_run_next_round(t - 1) and not plan.can_run_next_round(t)
  assert plan.epsilon(t) <= 3.0 < plan.epsilon(t + 1)


def test_no_dp_plan_reports_infinite_epsilon():
  plan = plan_lib.build_client_dp_plan('none', 100, 10)
  assert plan.epsilon(0) == 0.0 and plan.epsilon(3) == math.inf
  assert plan.can_run_next_round(100) and plan.build_aggregator() is None
  assert len(plan.sample(0, IDS)) == 10


def test_tree_plan_builds_restarting_aggregator_for_its_epochs():
  plan = plan_lib.build_client_dp_plan('tree', 100, 20, noise_multiplier=1.0, client_sampling='cyclic')
  assert isinstance(plan.sampler, sampling.CyclicSampler) and plan.sampler.cohorts_per_epoch == 5
  with pytest.raises(ValueError, match='record_specs'):
    plan.build_aggregator()

  def model_fn():
    keras_model = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(3,)), tf.keras.layers.Dense(2)])
    return tff.learning.models.from_keras_model(
        keras_model, loss=tf.keras.losses.MeanSquaredError(),
        input_spec=(tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None, 2], tf.float32)))

  assert isinstance(plan.build_aggregator(model_fn), tff.aggregators.DifferentiallyPrivateFactory)
  assert plan.epsilon(5) < plan.epsilon(6)  # A new epoch (tree) starts at round 6.


def test_secure_plan_is_flagged_approximate():
  plan = plan_lib.build_client_dp_plan('fixed', 100, 10, noise_multiplier=0.5, secure_bits=16)
  assert plan.epsilon_is_approximate and plan.summary()['secure_bits'] == 16
  assert isinstance(plan.build_aggregator(), tff.aggregators.UnweightedMeanFactory)


def test_sample_level_accountant_tracks_the_most_sampled_client():
  acc = plan_lib.SampleLevelAccountant(noise_multiplier=2.0, local_epochs=2)
  assert acc.epsilon(1e-5) == 0.0
  acc.record(['a', 'b'])
  acc.record(['a'])
  assert acc.epsilon(1e-5) == pytest.approx(accounting.example_level_epsilon(2.0, 4, 1e-5), rel=1e-12)
