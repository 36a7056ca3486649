"""Binary components `real_data`, `regimes` and `stragglers`: flags parsed as the binary parses them, one-line
ValueErrors for bad values; exactly one of regimes / stragglers owns the participation, whatever the order."""

import pytest
from absl import flags
import tensorflow_federated as tff

from experiments import experiment
from experiments import train  # pylint: disable=unused-import  (defines the binary's flags and components)
from experiments.components import real_data
from experiments.components import regimes as regimes_component
from experiments.components import stragglers as stragglers_component
from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import builders
from tff_fl.simulation import regimes
from tff_fl.simulation import stragglers
from tff_fl.simulation import training_loop

FLAGS = flags.FLAGS


@pytest.fixture
def parse():
  def parse_flags(*args):
    FLAGS.unparse_flags()
    FLAGS(['train', '--task=synthetic', '--num_clients=6', *args])
  yield parse_flags
  FLAGS.unparse_flags()


def _exp(epochs=2):
  task = tasks.build_task(tasks.TaskConfig(task='synthetic', model='logreg', num_clients=6))
  loop = training_loop.LoopConfig(clients_per_round=4, client_epochs_per_round=epochs)
  sgd = tff.learning.optimizers.build_sgdm(0.1)
  return experiment.Experiment(task=task, task_cfg=None, algo_cfg=builders.AlgorithmConfig(), loop_cfg=loop,
                               client_optimizer=sgd, server_optimizer=sgd, exp_dir='')


@pytest.mark.parametrize('args, match', [
    (['--central_eval=test,valid'], "central_eval must be a comma-separated subset of test, train; got 'valid'"),
    (['--central_eval=test', '--rounds_per_central_eval=-1'], '--rounds_per_central_eval must be >= 0'),
])
def test_central_eval_flag_errors(parse, args, match):
  parse(*args)
  with pytest.raises(ValueError, match=match):
    real_data.configure(_exp())


def test_central_eval_hook_added(parse):
  parse('--central_eval=train, test', '--rounds_per_central_eval=3', '--central_eval_max_examples=10')
  exp = _exp()
  real_data.configure(exp)
  (hook,) = exp.hooks
  assert list(hook.evaluators) == ['train', 'test'] and hook.every == 3
  assert all(e.y.shape[0] == 10 for e in hook.evaluators.values())


@pytest.mark.parametrize('args, epochs, match', [
    (['--straggler_model=sometimes'], 2, "--straggler_model must be one of per_client, fedprox; got 'sometimes'"),
    (['--straggler_model=fedprox', '--straggler_fraction=0.5'], 1, 'client_epochs_per_round >= 2'),
    (['--straggler_model=fedprox', '--straggler_fraction=0.5', '--dropout_rate=0.1'], 2, '--dropout_rate=0'),
])
def test_straggler_flag_errors(parse, args, epochs, match):
  parse(*args)
  with pytest.raises(ValueError, match=match):
    stragglers_component.configure(_exp(epochs))


@pytest.mark.parametrize('order', [(regimes_component, stragglers_component),
                                   (stragglers_component, regimes_component)])
def test_fedprox_stragglers_own_the_participation(parse, order):
  parse('--straggler_model=fedprox', '--straggler_fraction=0.5', '--straggler_policy=partial',
        '--availability=diurnal')
  exp = _exp()
  for component in order:
    component.configure(exp)
  assert isinstance(exp.participation, stragglers.FedProxStragglers) and exp.participation.policy == 'partial'
  assert exp.participation_flag == '--straggler_model=fedprox'
  assert isinstance(exp.sampler, regimes.AvailabilitySampler)  # regimes still owns the sampler.
  hooks = {type(h): h for h in exp.hooks}
  assert len(exp.hooks) == 2 and hooks[regimes.RegimeHook].participation is exp.participation
  assert hooks[regimes.AvailabilityHook].sampler is exp.sampler
  cohort = exp.participation(3, exp.task.client_ids[:4])
  assert isinstance(cohort, engine.Cohort) and exp.participation.stats['stragglers'] == 2


@pytest.mark.parametrize('order', [(regimes_component, stragglers_component),
                                   (stragglers_component, regimes_component)])
def test_per_client_stragglers_and_dropouts_are_the_regimes(parse, order):
  parse('--dropout_rate=0.3', '--straggler_fraction=0.2')
  exp = _exp()
  for component in order:
    component.configure(exp)
  assert type(exp.participation) is regimes.RegimeParticipation  # pylint: disable=unidiomatic-typecheck
  assert exp.participation_flag == '--dropout_rate/--straggler_fraction' and exp.sampler is None
  (hook,) = exp.hooks
  assert isinstance(hook, regimes.RegimeHook) and hook.participation is exp.participation


def test_no_participation_without_dropouts_or_stragglers(parse):
  parse('--straggler_model=fedprox')
  exp = _exp()
  regimes_component.configure(exp)
  stragglers_component.configure(exp)
  assert exp.participation is None and not exp.hooks
