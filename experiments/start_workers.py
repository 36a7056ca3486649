"""Starts N TFF `worker_binary`s on this host in the foreground; Ctrl-C / SIGTERM stops them all.

  python -m experiments.start_workers --num_workers=2 --base_port=8000
  python -m experiments.train ... --workers=127.0.0.1:8000,127.0.0.1:8001   # from this or another host

Workers listen on all interfaces ([::]:port) with NO authentication or encryption: expose the ports only on a
trusted network. They die with this script (PR_SET_PDEATHSIG), even on `kill -9`.
"""

import signal
import sys
import time

from absl import app
from absl import flags

from tff_fl.simulation import contexts
from tff_fl.simulation import multi_worker

_NUM_WORKERS = flags.DEFINE_integer('num_workers', 2, 'workers to start')
_BASE_PORT = flags.DEFINE_integer('base_port', 8000, 'worker i listens on base_port + i')
_LOG_PATH = flags.DEFINE_string('log_path', '', "workers' stdout/stderr (appended); empty = discarded")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if _NUM_WORKERS.value < 1:
    raise app.UsageError(f'--num_workers must be >= 1; got {_NUM_WORKERS.value}.')
  if not 0 < _BASE_PORT.value <= 65536 - _NUM_WORKERS.value:
    raise app.UsageError(f'--base_port must leave {_NUM_WORKERS.value} ports in 1-65535; got {_BASE_PORT.value}.')
  # Ctrl-C / SIGTERM -> KeyboardInterrupt. Setting a handler also keeps the workers from inheriting an ignored
  # SIGINT (background jobs, nohup), which would make each stop wait 10 s for the SIGKILL fallback.
  signal.signal(signal.SIGINT, signal.default_int_handler)
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  try:
    procs, addresses = multi_worker.start_local_workers(_NUM_WORKERS.value, _BASE_PORT.value,
                                                        log_path=_LOG_PATH.value or None)
    print(f"TFF workers ready: --workers={','.join(addresses)} (pids {' '.join(str(p.pid) for p in procs)}); "
          'Ctrl-C stops them.', flush=True)
    while all(p.poll() is None for p in procs):
      time.sleep(1.0)
    print('a worker exited; stopping the others.', file=sys.stderr, flush=True)
    sys.exit(1)
  except KeyboardInterrupt:
    pass
  finally:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # A second Ctrl-C must not interrupt the shutdown.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    contexts.shutdown()


if __name__ == '__main__':
  app.run(main)
