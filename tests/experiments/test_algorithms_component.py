"""Component `algorithms`: --algorithm=fedsgd / fednova build their definitions from the flags; FedNova's step
normalization needs SGD(m) clients (one-line refusal otherwise)."""

import types

import pytest
from absl import flags

from experiments import flag_groups
from experiments import train  # pylint: disable=unused-import  (defines the binary's flags and components)
from experiments.components import algorithms
from tff_fl.algorithms import builders
from tff_fl.algorithms import fed_sgd
from tff_fl.algorithms import fednova

FLAGS = flags.FLAGS



def _exp(algorithm):
  return types.SimpleNamespace(algo_cfg=builders.AlgorithmConfig(algorithm=algorithm),
                               client_optimizer=flag_groups.optimizer_from_flags('client'))


@pytest.mark.parametrize('args, want', [
    (['--algorithm=fedsgd'], fed_sgd.FedSGD()),
    (['--algorithm=fednova', '--client_learning_rate=0.05'], fednova.FedNova(0.05, 0.0)),
    (['--algorithm=fednova', '--client_optimizer=momentum', '--client_momentum=0.5'], fednova.FedNova(0.1, 0.5)),
])
def test_registry_builds_the_definition_from_flags(parse, args, want):
  parse(*args)
  exp = _exp(FLAGS.algorithm)
  algorithms.configure(exp)
  assert builders.build_algorithm(exp) == want


def test_fednova_refuses_adaptive_client_optimizers(parse):
  parse('--algorithm=fednova', '--client_optimizer=adam')
  with pytest.raises(ValueError, match='^--algorithm=fednova needs --client_optimizer=sgd or momentum .*; got '
                                       '--client_optimizer=adam.$'):
    algorithms.configure(_exp('fednova'))


@pytest.mark.parametrize('args, named', [
    (['--aggregator=clip(1.0)>mean'], '--aggregator=clip(1.0)>mean'),
    (['--aggregator=zeroing(5.0)>median'], '--aggregator=zeroing(5.0)>median'),
    (['--aggregator=topk(0.1)>mean'], '--aggregator=topk(0.1)>mean'),
    (['--dp=fixed', '--client_weighting=uniform'], '--dp=fixed'),
    (['--compression=topk_ef(0.1)'], '--compression=topk_ef(0.1)'),
])
def test_fednova_refuses_aggregation_that_changes_its_step_count(parse, args, named):
  parse('--algorithm=fednova', *args)
  with pytest.raises(ValueError, match=f'^--algorithm=fednova cannot be combined with {__import__("re").escape(named)}:'
                                       ' its step count travels with the update'):
    algorithms.configure(_exp('fednova'))


@pytest.mark.parametrize('aggregator', ['mean', 'median', 'trimmed_mean(0.2)', 'krum(1)', 'multi_krum(1,3)'])
def test_fednova_accepts_aggregators_that_leave_values_unchanged(parse, aggregator):
  parse('--algorithm=fednova', f'--aggregator={aggregator}')
  algorithms.configure(_exp('fednova'))
