"""`--pruning_schedule` (component `pruning`) appends the `Pruning` extension for every algorithm; the run's final
model is exported from the engine state's masks (`state['extensions']['pruning']`)."""

import os

import numpy as np
import pytest
from absl import flags
import tensorflow_federated as tff

from experiments import experiment as experiment_lib
from experiments import train  # pylint: disable=unused-import  (defines the binary's flags and components)
from experiments.components import pruning as pruning_component
from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import builders
from tff_fl.algorithms import pruning
from tff_fl.simulation import training_loop

FLAGS = flags.FLAGS


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(num_clients=4, model='logreg'))



def _experiment(task, tmp_path, algorithm):
  sgd = tff.learning.optimizers.build_sgdm
  exp = experiment_lib.Experiment(
      task, tasks.TaskConfig(num_clients=4), builders.AlgorithmConfig(algorithm=algorithm),
      training_loop.LoopConfig(total_rounds=2, clients_per_round=3), sgd(0.1), sgd(1.0), str(tmp_path))
  pruning_component.configure(exp)
  return exp


@pytest.mark.parametrize('algorithm', ['fedsgd', 'fednova', 'scaffold', 'ditto'])
def test_every_algorithm_gets_the_extension(task, tmp_path, parse, algorithm):
  parse('--pruning_schedule=polynomial', '--final_sparsity=0.8')
  exp = _experiment(task, tmp_path, algorithm)
  (extension,) = exp.extensions
  assert isinstance(extension, pruning.Pruning) and extension.names == ['layer1_dense_kernel', None]
  assert [type(h) for h in exp.hooks] == [pruning_component.PruningHook]


def test_no_schedule_adds_nothing(task, tmp_path, parse):
  parse('--pruning_schedule=none')
  exp = _experiment(task, tmp_path, 'fedavg')
  assert not exp.extensions and not exp.hooks


def test_final_export_reads_the_masks_from_the_engine_state(task, tmp_path, parse):
  parse('--pruning_schedule=constant', '--final_sparsity=0.5')
  exp = _experiment(task, tmp_path, 'fedavg')
  process = exp.build_process()
  state = process.set_model_weights(process.initialize(), task.initial_weights(0))
  for r in (1, 2):
    out = process.next(state, engine.Cohort.full(r, task.client_ids[:3]))
    state = out.state
  assert out.metrics['pruning']['sparsity'] == pytest.approx(0.5)
  masks = pruning.masks_of(state)
  np.testing.assert_array_equal(masks[0], np.asarray(state['extensions']['pruning']['masks'][0]))
  (hook,) = exp.hooks
  hook.on_train_end(process, state, {})
  assert os.path.isdir(os.path.join(str(tmp_path), 'pruned_model'))
  assert hook.summary()['pruned_measured_sparsity'] == pytest.approx(0.5)
