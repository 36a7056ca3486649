"""Two TFF workers on loopback give the single-process results (reference: the same process run in the managed
single-worker context), refuse computations TFF cannot split, and leave no worker behind."""

import collections
import os
import subprocess
import sys

import numpy as np
import psutil
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import tasks
from tff_fl.algorithms import fed_avg
from tff_fl.simulation import contexts
from tff_fl.simulation import multi_worker
from tff_fl.simulation import training_loop
from tff_fl.simulation.fast import engine
from tff_fl.simulation.fast import packing

ROUNDS, SEED = 2, 3
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _alive(pids):
  return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(task='digits', model='logreg', num_clients=4, seed=SEED))


def _run(process, inputs_fn, task):
  state = process.set_model_weights(process.initialize(), task.initial_weights(SEED))
  for r in range(1, ROUNDS + 1):
    output = process.next(state, inputs_fn(r, task.client_ids))
    state = output.state
  return [np.asarray(w) for w in tf.nest.flatten(process.get_model_weights(state))], output.metrics


def test_two_workers_match_single_process_and_stop(task):
  opt = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  loop = training_loop.LoopConfig(client_epochs_per_round=1, client_batch_size=10, seed=SEED)
  runs = collections.OrderedDict(
      ours=(lambda: fed_avg.build_fed_avg(task.model_fn, opt), training_loop.default_client_inputs(task, loop)),
      fast_2slots=(lambda: engine.build_fast_fed_avg(task.model_fn, opt, batch_size=10),
                   packing.build_client_inputs_fn(task, epochs=1, seed=SEED, num_groups=2)))
  single = {name: _run(build(), inputs, task) for name, (build, inputs) in runs.items()}
  before = set(contexts.running_workers())
  with multi_worker.worker_context(num_local=2) as context:
    workers = sorted(set(contexts.running_workers()) - before)
    assert len(workers) == 2 and len(context._async_execution_contexts) == 2  # pylint: disable=protected-access
    split = {name: _run(build(), inputs, task) for name, (build, inputs) in runs.items()}
  for name in runs:
    (w1, m1), (w2, m2) = single[name], split[name]
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(w1, w2)) <= 1e-6, name
    assert m1['client_work']['train']['num_examples'] == m2['client_work']['train']['num_examples'], name
    np.testing.assert_allclose(m1['client_work']['train']['loss'], m2['client_work']['train']['loss'], rtol=1e-6)
  assert not _alive(workers)
  assert not set(contexts.running_workers()) & set(workers)


@tff.tensorflow.computation(np.float32, np.float32)
def _subtract(a, b):
  return a - b


def test_dependent_aggregations_are_refused_clearly():
  @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
  def centred_mean(x):  # Mean, broadcast back, mean of the deviations: an aggregation consumes another's result.
    mean = tff.federated_mean(x)
    return tff.federated_mean(tff.federated_map(_subtract, (x, tff.federated_broadcast(mean))))

  with pytest.raises(multi_worker.NotMergeableError, match='cannot be split across TFF workers'):
    multi_worker.compile_mergeable(centred_mean)


@pytest.mark.parametrize('spec, expected', [('', (0, [])), ('local:3', (3, [])),
                                            ('10.0.0.1:8000, hostB:8001', (0, ['10.0.0.1:8000', 'hostB:8001']))])
def test_parse_workers(spec, expected):
  assert multi_worker.parse_workers(spec) == expected


@pytest.mark.parametrize('spec', ['local:0', 'local:x', 'hostA', 'hostA:99999', ':8000'])
def test_parse_workers_rejects_bad_specs(spec):
  with pytest.raises(ValueError, match='workers must be'):
    multi_worker.parse_workers(spec)


def test_unreachable_worker_fails_fast():
  with pytest.raises(RuntimeError, match='no TFF worker answered at 127.0.0.1:1'):
    multi_worker.create_worker_context(['127.0.0.1:1'], timeout_s=0.5)


def _marked_processes(mark):
  """Live processes (e.g. worker_binaries) whose environment carries `mark`: children inherit it."""
  found = []
  for proc in psutil.process_iter():
    try:
      if proc.environ().get('TFF_FL_TEST_MARK') == mark and proc.status() != psutil.STATUS_ZOMBIE:
        found.append(proc.pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
      pass
  return found


def test_binary_refuses_unsplittable_process_and_stops_its_workers(tmp_path):
  """--workers=local:2 with drift diagnostics (a mean gradient broadcast back and averaged again): one-line error
  naming --workers, exit code 2, and no worker it started survives it."""
  mark = f'multi_worker_{os.getpid()}_{id(tmp_path)}'
  cmd = [sys.executable, '-m', 'experiments.train', f'--root_output_dir={tmp_path}', '--task=digits', '--model=logreg',
         '--num_clients=6', '--clients_per_round=3', '--total_rounds=1', '--workers=local:2', '--drift_metrics']
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', TFF_FL_TEST_MARK=mark))
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith('error: --workers: this computation cannot be split')
  assert os.path.exists(os.path.join(tmp_path, 'default', 'workers.log'))  # The two local workers were started.
  assert not _marked_processes(mark)
