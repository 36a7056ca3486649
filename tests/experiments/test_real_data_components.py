"""Binary components `real_data` and `stragglers`: flags parsed as the binary parses them, one-line ValueErrors for
bad values, and the FedProx straggler inputs wired in place of the `regimes` ones."""

import types

import pytest
from absl import flags

from experiments import train  # pylint: disable=unused-import  (defines the binary's flags and components)
from experiments.components import real_data
from experiments.components import stragglers as stragglers_component
from tff_fl import tasks
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
  return types.SimpleNamespace(task=task, loop_cfg=loop, hooks=[], sampler=None, client_inputs_fn=None, process=None)


@pytest.mark.parametrize('args, match', [
    (['--central_eval=test,valid'], "--central_eval must be a comma-separated subset of test, train; got 'valid'"),
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
    (['--straggler_model=fedprox', '--straggler_fraction=0.5'], 1, '--client_epochs_per_round >= 2'),
    (['--straggler_model=fedprox', '--straggler_fraction=0.5', '--dropout_rate=0.1'], 2, '--dropout_rate=0'),
])
def test_straggler_flag_errors(parse, args, epochs, match):
  parse(*args)
  with pytest.raises(ValueError, match=match):
    stragglers_component.configure(_exp(epochs))


def test_fedprox_stragglers_replace_regime_inputs(parse):
  parse('--straggler_model=fedprox', '--straggler_fraction=0.5', '--straggler_policy=partial')
  exp = _exp()
  exp.hooks.append(regimes.RegimeHook(None, 'regime inputs'))  # As the `regimes` component leaves it.
  stragglers_component.configure(exp)
  assert isinstance(exp.client_inputs_fn, stragglers.FedProxStragglers)
  assert exp.hooks[0].inputs is exp.client_inputs_fn and exp.client_inputs_fn.policy == 'partial'
