"""Two TFF workers on loopback give the single-process results (reference: the same process run in the managed
single-worker context) for stock TFF on tf.data and for the packed engine with 2 CLIENTS slots (one per worker),
refuse computations TFF cannot split, and leave no worker behind."""

import collections
import os
import subprocess
import sys

import numpy as np
import psutil
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import fed_avg
from tff_fl.simulation import contexts
from tff_fl.simulation import multi_worker
from tff_fl.simulation import stock_process
from tff_fl.simulation import training_loop

ROUNDS, SEED = 2, 3
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _alive(pids):
  return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(task='digits', model='logreg', num_clients=4, seed=SEED))


def _run(process, task):
  state = process.set_model_weights(process.initialize(), task.initial_weights(SEED))
  for r in range(1, ROUNDS + 1):
    output = process.next(state, engine.Cohort.full(r, task.client_ids))
    state = output.state
  return [np.asarray(w) for w in tf.nest.flatten(process.get_model_weights(state))], output


def test_two_workers_match_single_process_and_stop(task):
  opt = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  loop = training_loop.LoopConfig(client_epochs_per_round=1, client_batch_size=10, seed=SEED)
  runs = collections.OrderedDict(
      stock_export=lambda: stock_process.StockProcess(fed_avg.build_fed_avg(task.model_fn, opt), task, loop),
      packed_2slots=lambda: engine.build_task_process(fed_avg.FedAvg(), task, epochs=1, batch_size=10, seed=SEED,
                                                      client_optimizer=opt, num_slots=2))
  single = {name: _run(build(), task) for name, build in runs.items()}
  before = set(contexts.running_workers())
  with multi_worker.worker_context(num_local=2) as context:
    workers = sorted(set(contexts.running_workers()) - before)
    assert len(workers) == 2 and len(context._async_execution_contexts) == 2  # pylint: disable=protected-access
    split = {name: _run(build(), task) for name, build in runs.items()}
  for name in runs:
    (w1, out1), (w2, out2) = single[name], split[name]
    m1, m2 = out1.metrics, out2.metrics
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(w1, w2)) <= 1e-6, name
    assert m1['client_work']['train']['num_examples'] == m2['client_work']['train']['num_examples'], name
    np.testing.assert_allclose(m1['client_work']['train']['loss'], m2['client_work']['train']['loss'], rtol=1e-6)
  # The packed engine's per-client outputs come back in cohort order from both workers (client states rely on it).
  (_, out1), (_, out2) = single['packed_2slots'], split['packed_2slots']
  assert out1.client_ids == out2.client_ids == tuple(task.client_ids)
  losses = lambda out: [m['loss'] for m in out.client_metrics]
  np.testing.assert_allclose(losses(out1), losses(out2), rtol=1e-6)
  assert [m['num_examples'] for m in out1.client_metrics] == [m['num_examples'] for m in out2.client_metrics]
  assert len(set(losses(out1))) == len(task.client_ids)  # Distinct clients, so the order check has teeth.
  assert not _alive(workers)
  assert not set(contexts.running_workers()) & set(workers)


@tff.tensorflow.computation(np.int32, np.int32)
def _busy_identity(n, total):  # Returns n after n loop steps: a client with a large n finishes last.
  _, acc = tf.while_loop(lambda i, a: i < n, lambda i, a: (i + 1, a + tf.sin(a) + 1.0), (0, 0.0))
  return n + tf.cast(acc * 0.0, tf.int32) + 0 * total


def test_clients_placed_results_keep_slice_order():
  """The per-client part runs after the merge, once per worker; the first worker's slice is slow, so it finishes
  last. TFF 0.87's context returns the slices in completion order ([1, 200000]); ours in the clients' order."""
  @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
  def total_and_echo(x):
    total = tff.federated_sum(x)
    return total, tff.federated_map(_busy_identity, (x, tff.federated_broadcast(total)))

  with multi_worker.worker_context(num_local=2) as context:
    assert isinstance(context, multi_worker.OrderedMergeableContext)
    total, echo = total_and_echo([200_000, 1])
  assert total == 200_001 and list(echo) == [200_000, 1]


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
  """--workers=local:2 with a stock process whose aggregator is secure_mean (it broadcasts the weight total back and
  aggregates again): one-line error naming --workers, exit code 2, and no worker it started survives it."""
  mark = f'multi_worker_{os.getpid()}_{id(tmp_path)}'
  cmd = [sys.executable, '-m', 'experiments.train', f'--root_output_dir={tmp_path}', '--task=digits', '--model=logreg',
         '--num_clients=6', '--clients_per_round=3', '--total_rounds=1', '--workers=local:2', '--engine=tff',
         '--aggregator=secure(16)>mean']
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', TFF_FL_TEST_MARK=mark))
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith('error: --workers: this computation cannot be split')
  assert os.path.exists(os.path.join(tmp_path, 'default', 'workers.log'))  # The two local workers were started.
  assert not _marked_processes(mark)
