"""Experiment: the registry's definition runs on the packed engine or as the stock TFF process; participation is
set once; the stock engine refuses what it cannot run."""

import types

import pytest
import tensorflow_federated as tff

from experiments import experiment
from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import builders
from tff_fl.algorithms import extension
from tff_fl.algorithms import fed_avg
from tff_fl.simulation import stock_process
from tff_fl.simulation import training_loop

import train_binary  # tests/train_binary.py


def _exp(**kwargs):
  task = tasks.build_task(tasks.TaskConfig(task='digits', model='logreg', num_clients=4))
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
