"""The managed TFF context: output piped through a worker never hangs, and no worker outlives its Python."""

import os
import signal
import subprocess
import sys
import time

import psutil

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
