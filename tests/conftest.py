"""Suite-wide fixtures: quiet TF logs and a hard check that no TFF worker_binary outlives the suite."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('GRPC_ENABLE_FORK_SUPPORT', 'false')  # As the binaries (experiments/__init__.py).

import psutil  # pylint: disable=g-import-not-at-top

from tff_fl.simulation import contexts  # pylint: disable=g-import-not-at-top

# Importing tff_fl installs no execution context (tests/test_layering.py); tests call TFF computations directly.
contexts.set_local_cpp_context()


def worker_pids_of(pid: int) -> list[int]:
  """PIDs of worker_binary processes descended from `pid`."""
  try:
    children = psutil.Process(pid).children(recursive=True)
  except psutil.NoSuchProcess:
    return []
  return [c.pid for c in children if 'worker_binary' in ' '.join(_safe_cmdline(c))]


def _safe_cmdline(proc) -> list[str]:
  try:
    return proc.cmdline()
  except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
    return []


def pytest_sessionfinish(session, exitstatus):  # pylint: disable=unused-argument
  """Stops our workers, then fails the run if any worker_binary started by this suite is still alive."""
  contexts.shutdown()
  left = worker_pids_of(os.getpid())
  if left:
    print(f'\nERROR: worker_binary processes left running after the suite: {left}')
    session.exitstatus = 1
