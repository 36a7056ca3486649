"""The managed TFF context: output piped through a worker never hangs, and no worker outlives its Python."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

_SCRIPT = r'''
import numpy as np, tensorflow_federated as tff
from tff_fl.simulation import contexts
contexts.set_local_cpp_context()
@tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
def mean(x):
  return tff.federated_mean(x)
print('MEAN', mean([1.0, 2.0, 6.0]), 'WORKERS', contexts.running_workers(), flush=True)
'''


def _workers_with_parent_gone(pids):
  return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_piped_run_finishes_and_leaves_no_worker():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  # communicate() reads until EOF: it would hang if a worker held the pipe open after Python exits.
  proc = subprocess.run([sys.executable, '-c', _SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                        timeout=120, check=True, stdin=subprocess.DEVNULL)
  line = [l for l in proc.stdout.decode().splitlines() if l.startswith('MEAN')][0]
  assert line.split()[1] == '3.0'
  pids = [int(p) for p in line.split('[')[1].rstrip(']').split(',') if p.strip()]
  assert len(pids) == 1
  time.sleep(0.5)
  assert not _workers_with_parent_gone(pids)


def test_worker_dies_with_killed_parent():
  script = _SCRIPT + 'import time; time.sleep(600)\n'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          env=env, stdin=subprocess.DEVNULL)
  try:
    line = ''
    while not line.startswith('MEAN'):
      line = proc.stdout.readline().decode()
      assert line, 'child exited early'
    pids = [int(p) for p in line.split('[')[1].rstrip(']\n').split(',') if p.strip()]
    assert pids and psutil.pid_exists(pids[0])
    proc.send_signal(signal.SIGKILL)  # No atexit, no __del__: only PR_SET_PDEATHSIG can stop the worker.
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while _workers_with_parent_gone(pids) and time.time() < deadline:
      time.sleep(0.1)
    assert not _workers_with_parent_gone(pids)
  finally:
    if proc.poll() is None:
      proc.kill()


def _marked_workers(marker):
  """Live worker_binary processes whose environment carries `marker` (they inherit the starting Python's)."""
  found = []
  for p in psutil.process_iter(['cmdline']):
    try:
      if any('worker_binary' in part for part in (p.info['cmdline'] or [])[:1]) and \
          p.environ().get('TFF_FL_TEST_MARKER') == marker and p.status() != psutil.STATUS_ZOMBIE:
        found.append(p.pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
      pass
  return found


def test_training_binary_stopped_by_sigterm_leaves_no_worker(tmp_path):
  """A background training run (e.g. a reproduction driver's child) stopped with SIGTERM mid-run: the worker its
  rounds started (two engine slots run on TFF's runtime; one slot would start none) dies with it."""
  marker = f'sigterm-{os.getpid()}-{time.time()}'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', TFF_FL_TEST_MARKER=marker)
  cmd = [sys.executable, '-m', 'experiments.train', f'--root_output_dir={tmp_path}', '--task=digits', '--model=logreg',
         '--num_clients=10', '--clients_per_round=5', '--total_rounds=1000', '--rounds_per_eval=1', '--engine_slots=2']
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                          stdin=subprocess.DEVNULL)
  try:
    line = ''
    while 'eval_accuracy' not in line:  # A round has run: its worker exists.
      line = proc.stdout.readline().decode()
      assert line, 'training exited early'
    assert _marked_workers(marker)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    deadline = time.time() + 10
    while _marked_workers(marker) and time.time() < deadline:
      time.sleep(0.1)
    assert not _marked_workers(marker)
  finally:
    if proc.poll() is None:
      proc.kill()


def test_a_worker_that_dies_during_start_up_is_started_again(monkeypatch):
  from tff_fl.simulation import contexts  # pylint: disable=g-import-not-at-top
  real_start, started = contexts.start_worker, []

  def start_worker(**kwargs):
    if len(started) < 2:  # The first two die as the gRPC segfault did (SIGSEGV, returncode -11).
      proc = subprocess.Popen([sys.executable, '-c', 'import os, signal; os.kill(os.getpid(), signal.SIGSEGV)'])
      started.append(proc)
      return proc, 1
    proc, port = real_start(**kwargs)
    started.append(proc)
    return proc, port

  monkeypatch.setattr(contexts, 'start_worker', start_worker)
  worker = contexts._ManagedWorker(None)  # pylint: disable=protected-access
  try:
    assert worker.get_stub().is_ready
    assert [p.returncode for p in started[:2]] == [-signal.SIGSEGV] * 2 and started[2].poll() is None
  finally:
    worker.close()
  monkeypatch.setattr(contexts, 'start_worker', lambda **kwargs: (
      subprocess.Popen([sys.executable, '-c', 'raise SystemExit(3)']), 1))
  with pytest.raises(RuntimeError, match='exited with code 3 during start-up, 3 times'):
    contexts._ManagedWorker(None).get_stub()  # pylint: disable=protected-access
