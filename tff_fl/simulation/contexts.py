"""Execution contexts that never leave a TFF `worker_binary` behind.

TFF's stock local C++ context (`tff.backends.native.set_sync_local_cpp_execution_context`) starts the C++
`worker_binary` lazily, gives it the parent's stdout/stderr and only stops it from a `__del__` that does not run
at interpreter exit. A run that pipes its output (pytest, CI, `| tee`) then hangs: the orphaned worker keeps the
pipe open. The context built here differs in three ways and is otherwise TFF's own (same executor stack, same
compiler, same gRPC options):

* the worker's stdout/stderr go to a log file (or /dev/null), never to the parent's pipes;
* the worker is started with `PR_SET_PDEATHSIG=SIGKILL`, so the kernel kills it if Python dies, even on `kill -9`;
* `shutdown()` (also registered with `atexit`) terminates and reaps every worker this module started;
* large numpy arguments (the packed engine's client states) are serialized with one copy of their bytes
  (`value_transfer`; the proto sent is TFF's own), and glibc keeps such buffers for reuse in both processes.

Secure-sum intrinsics are lowered to plain sums (as `tff.backends.test` does), so secure aggregators simulate.

Importing `tff_fl` installs nothing. The binaries install this context (`set_local_cpp_context`), the simulation
layer's training loop calls `ensure_local_cpp_context()` (installs it only while TFF's own import-time default is
current, so a context the user installed is kept), and tests install it in tests/conftest.py.
"""

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from typing import Optional

from absl import logging
import grpc
import portpicker
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.native import compiler
from tensorflow_federated.python.core.backends.test import compiler as test_compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.execution_contexts import sync_execution_context
from tensorflow_federated.python.core.impl.executor_stacks import executor_factory as tff_executor_factory
from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub

from tff_fl.simulation import value_transfer

WORKER_BINARY = os.path.normpath(
    os.path.join(os.path.dirname(tff.__file__), 'data', 'worker_binary'))
_PR_SET_PDEATHSIG = 1
_READY_TIMEOUT_S = 60.0
_START_ATTEMPTS = 3

_lock = threading.Lock()
_workers: list[subprocess.Popen] = []
# TFF installs its own local C++ context at import (it leaves its worker behind; module docstring).
_TFF_DEFAULT_CONTEXT = context_stack_impl.context_stack.current


_libc = []  # Loaded in the parent: the child between fork and exec of a threaded parent must not dlopen.


def _die_with_parent():  # Runs in the child between fork and exec.
  _libc[0].prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
  # A parent that ignores SIGINT (nohup, background jobs) would pass that on, and stop_worker's SIGINT would wait
  # out its timeout; restore the default so the worker exits on SIGINT.
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_worker(port: Optional[int] = None, log_path: Optional[str] = None,
                 max_concurrent_computation_calls: int = -1) -> tuple[subprocess.Popen, int]:
  """Starts one `worker_binary` on localhost; returns (process, port). The caller's thread is its 'parent'."""
  if not os.path.isfile(WORKER_BINARY):
    raise RuntimeError(f'TFF worker binary not found at {WORKER_BINARY}; reinstall tensorflow-federated==0.87.0.')
  port = port or portpicker.pick_unused_port()
  if not _libc:
    _libc.append(ctypes.CDLL('libc.so.6', use_errno=True))
  out = open(log_path, 'ab') if log_path else subprocess.DEVNULL  # pylint: disable=consider-using-with
  args = [WORKER_BINARY, f'--port={port}', f'--max_concurrent_computation_calls={max_concurrent_computation_calls}']
  # glibc's per-thread arenas fragment in the multi-threaded worker: over 2,000 rounds its peak RSS grew 24% with
  # the default and 5-9% with MALLOC_ARENA_MAX=2 (experiments/results/benchmark.md).
  env = dict(os.environ)
  env.setdefault('MALLOC_ARENA_MAX', '2')
  value_transfer.worker_env(env)  # Large transfer buffers are reused, not faulted in again every round.
  proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True, env=env,
                          preexec_fn=_die_with_parent)
  if out is not subprocess.DEVNULL:
    out.close()
  with _lock:
    _workers.append(proc)
  return proc, port


def stop_worker(proc: subprocess.Popen, timeout: float = 10.0) -> None:
  """Terminates and reaps one worker (SIGINT, then SIGKILL after `timeout` seconds)."""
  if proc.poll() is None:
    proc.send_signal(signal.SIGINT)
    try:
      proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
  with _lock:
    if proc in _workers:
      _workers.remove(proc)


def shutdown() -> None:
  """Stops every worker this process started. Safe to call repeatedly; registered with `atexit`."""
  with _lock:
    procs = list(_workers)
  for proc in procs:
    stop_worker(proc)


atexit.register(shutdown)


def running_workers() -> list[int]:
  """PIDs of live workers started by this process."""
  with _lock:
    return [p.pid for p in _workers if p.poll() is None]


class _ManagedWorker:
  """Owns one worker and the gRPC stub talking to it; restarts the worker if it died."""

  def __init__(self, log_path: Optional[str]):
    self._log_path = log_path
    self._proc = None
    self._stub = None

  def get_stub(self) -> remote_executor_grpc_stub.RemoteExecutorGrpcStub:
    """The live worker's stub; (re)starts the worker if needed. A worker that dies during start-up (seen: a
    segfault in gRPC's event engine on a loaded machine) is started again, up to `_START_ATTEMPTS` times."""
    if self._stub is not None and self._proc.poll() is None and self._stub.is_ready:
      return self._stub
    for attempt in range(1, _START_ATTEMPTS + 1):
      if self._proc is not None:
        stop_worker(self._proc)
      self._proc, port = start_worker(log_path=self._log_path)
      channel = grpc.insecure_channel(f'localhost:{port}', tff_executor_factory._GRPC_CHANNEL_OPTIONS)  # pylint: disable=protected-access
      self._stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)
      deadline = time.monotonic() + _READY_TIMEOUT_S
      while not self._stub.is_ready and self._proc.poll() is None:
        if time.monotonic() > deadline:
          stop_worker(self._proc)
          raise RuntimeError(f'TFF worker_binary did not become ready within {_READY_TIMEOUT_S:.0f}s.')
        time.sleep(0.05)
      if self._proc.poll() is None:
        return self._stub
      logging.warning('TFF worker_binary exited with code %s during start-up (attempt %d of %d).',
                      self._proc.returncode, attempt, _START_ATTEMPTS)
    raise RuntimeError(f'TFF worker_binary exited with code {self._proc.returncode} during start-up, '
                       f'{_START_ATTEMPTS} times.')

  def close(self):
    if self._proc is not None:
      stop_worker(self._proc)
    self._proc, self._stub = None, None


def _compile(comp):
  """TFF's native compiler, after lowering secure sums to plain sums with bit-width checks (the C++ runtime has no
  SecAgg; `tff.backends.test` does the same), so `tff.federated_secure_sum_bitwidth` aggregators run in simulation."""
  return compiler.desugar_and_transform_to_native(test_compiler.replace_secure_intrinsics_with_bodies(comp))


def create_local_cpp_context(default_num_clients: int = 0, log_path: Optional[str] = None):
  """Returns (context, close_fn): TFF's sync C++ context backed by a worker that this module manages."""
  value_transfer.keep_large_blocks()
  worker = _ManagedWorker(log_path)

  def stack_fn(cardinalities):
    if cardinalities.get(tff.CLIENTS) is None:
      cardinalities[tff.CLIENTS] = default_num_clients
    ex = value_transfer.RemoteExecutor(worker.get_stub())
    ex.set_cardinalities(cardinalities)
    return ex

  factory = python_executor_stacks.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn)
  context = sync_execution_context.SyncExecutionContext(
      executor_fn=factory,
      compiler_fn=_compile,
      transform_args=tensorflow_computation.transform_args,
      transform_result=tensorflow_computation.transform_result,
  )
  return context, worker.close


def set_local_cpp_context(default_num_clients: int = 0, log_path: Optional[str] = None):
  """Installs the managed C++ context as TFF's default; returns a function that stops its worker."""
  context, close = create_local_cpp_context(default_num_clients, log_path)
  context_stack_impl.context_stack.set_default_context(context)
  return close


def ensure_local_cpp_context() -> None:
  """Installs the managed context if TFF's import-time default context is still the current one; else a no-op."""
  if context_stack_impl.context_stack.current is _TFF_DEFAULT_CONTEXT:
    set_local_cpp_context()


@contextlib.contextmanager
def local_cpp_context(default_num_clients: int = 0, log_path: Optional[str] = None):
  """`with local_cpp_context(): ...` runs TFF computations on a managed worker, stopped on exit."""
  context, close = create_local_cpp_context(default_num_clients, log_path)
  try:
    with context_stack_impl.context_stack.install(context):
      yield context
  finally:
    close()
    logging.debug('TFF worker stopped.')
