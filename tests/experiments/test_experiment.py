"""Experiment: the registry's definition runs on the packed engine or as the stock TFF process; participation is
set once; the stock engine refuses what it cannot run; --client_axis picks how a slot's clients run."""

import types

import pytest
import tensorflow as tf
import tensorflow_federated as tff

from experiments import experiment
from experiments.components import engine as engine_component
from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import builders
from tff_fl.algorithms import dp_sgd_client
from tff_fl.algorithms import extension
from tff_fl.algorithms import fed_avg
from tff_fl.simulation import stock_process
from tff_fl.simulation import training_loop

import train_binary  # tests/train_binary.py


def _exp(model='logreg', **kwargs):
  task = tasks.build_task(tasks.TaskConfig(task='digits', model=model, num_clients=4))
  sgd = tff.learning.optimizers.build_sgdm(0.1)
  return experiment.Experiment(task=task, task_cfg=None, algo_cfg=builders.AlgorithmConfig(**kwargs),
                               loop_cfg=training_loop.LoopConfig(), client_optimizer=sgd, server_optimizer=sgd,
                               exp_dir='')


def test_packed_is_the_default_and_tff_builds_the_stock_process():
  exp = _exp(algorithm='fedprox', mu=0.1)
  assert isinstance(exp.build_process(), engine.EngineProcess)
  assert exp.algorithm.proximal_mu == 0.1
  exp.engine = 'tff'
  assert isinstance(exp.build_process(), stock_process.StockProcess)


def test_stock_engine_refuses_extensions():
  exp = _exp()
  exp.engine = 'tff'
  exp.extensions.append(extension.Extension())
  with pytest.raises(ValueError, match='^--engine=tff runs stateless algorithms .* got extension. Use '
                                       '--engine=packed.$'):
    exp.build_process()


def test_participation_is_set_once():
  exp = _exp()
  exp.set_participation(lambda r, ids: None, '--dropout_rate=0.1')
  with pytest.raises(ValueError, match='^--dropout_rate=0.1 and --straggler_model=fedprox both decide which '
                                       'clients report; use one.$'):  # The same words in either order.
    exp.set_participation(lambda r, ids: None, '--straggler_model=fedprox')


def test_process_checks_run_on_the_built_process():
  exp = _exp()
  seen = []
  exp.process_checks.append(seen.append)
  process = exp.build_process()
  assert seen == [process]


def test_a_binary_run_leaves_nothing_behind_for_the_next_experiment(tmp_path):
  """Regression: the stateful component registered its top-k EF wrapper globally, so every later experiment in the
  process was wrapped by (or read the flags of) an earlier run. Wrappers now belong to their experiment."""
  result = train_binary.run(f'--root_output_dir={tmp_path}', '--task=digits', '--model=logreg', '--num_clients=4',
                            '--clients_per_round=2', '--total_rounds=1', '--compression=topk_ef(0.1)')
  assert result.returncode == 0, result.stderr[-2000:]
  exp = _exp()
  exp.build_process()
  assert type(exp.algorithm) is fed_avg.FedAvg and exp.algorithm_wrappers == []


@pytest.mark.parametrize('value, execution', [('auto', 'client axis'), ('true', 'client axis'),
                                              ('false', 'sequential (client_axis=False)')])
def test_client_axis_flag_chooses_how_a_slots_clients_run(parse, value, execution):
  parse(f'--client_axis={value}')
  exp = _exp()
  engine_component.configure(exp)
  assert exp.build_process().client_execution == execution


def test_client_axis_flag_errors_name_the_flags(parse):
  parse('--client_axis=maybe')
  with pytest.raises(ValueError, match="^--client_axis must be one of auto, true, false; got 'maybe'.$"):
    engine_component.configure(_exp())
  parse('--engine=tff', '--client_axis=false')
  with pytest.raises(ValueError, match='^--client_axis applies to --engine=packed; got --engine=tff '
                                       '--client_axis=false.$'):
    engine_component.configure(_exp())
  parse('--client_axis=true')
  exp = _exp(model='cnn')  # DP-SGD's per-example norms on the client axis need Dense layers.
  engine_component.configure(exp)
  exp.extensions.append(dp_sgd_client.SampleDP(1.0, 0.5, tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, reduction='none')))
  with pytest.raises(ValueError, match='^--client_axis=true, but the clients cannot run on a client axis: DP-SGD on '
                                       'the client axis takes per-example gradient norms from Dense layers'):
    exp.build_process()
