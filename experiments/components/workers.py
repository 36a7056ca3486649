"""`--workers`: run the experiment on several TFF `worker_binary`s (TFF's mergeable-computation context).

`--workers=` (empty, default) keeps the managed single local worker. `--workers=local:N` starts N local workers
(stopped at exit by `contexts.shutdown()`, and by the kernel if Python dies). `--workers=host1:port,host2:port`
connects to running workers (e.g. `python -m experiments.start_workers` on each host); they are never stopped by
us. Each round's cohort is cut into one contiguous slice per worker and the partial aggregates are merged
(`tff_fl.simulation.multi_worker`). On the packed engine a CLIENTS slot is the unit that is split, so use
`--engine_slots` >= the number of workers. Processes with an aggregation that consumes another aggregation's result
(e.g. secure_mean) are refused before training.
"""

import atexit
import os

from absl import flags
from absl import logging

from experiments import flag_groups
from tff_fl.simulation import multi_worker

FLAGS = flags.FLAGS


def define_flags() -> None:
  flag_groups.define_flag('string', 'workers', '', "TFF workers: '' (one managed local worker), 'local:N' (start N "
                          'local workers) or host:port,... (running worker_binaries; clients split across them)')


def _flag_error(e: Exception) -> ValueError:
  text = str(e)
  return ValueError(f'--{text}' if text.startswith('workers') else f'--workers: {text}')


def configure(exp) -> None:
  try:
    num_local, addresses = multi_worker.parse_workers(FLAGS.workers)
  except ValueError as e:
    raise _flag_error(e) from None
  if not num_local and not addresses:
    return
  num_workers = num_local + len(addresses)
  if FLAGS.engine == 'packed' and FLAGS.engine_slots < num_workers:
    logging.warning('--engine_slots=%d < %d workers: only %d worker(s) get clients.', FLAGS.engine_slots,
                    num_workers, FLAGS.engine_slots)
  try:
    close = multi_worker.set_worker_context(addresses, num_local,
                                            log_path=os.path.join(exp.exp_dir, 'workers.log'))
  except RuntimeError as e:
    raise _flag_error(e) from None
  atexit.register(close)
  exp.engine_runtime = 'tff'  # The packed engine's rounds run on these workers, not in this process.
  def check(process):  # The built process must split into mergeable parts.
    try:
      multi_worker.check_process(process)
    except multi_worker.NotMergeableError as e:
      raise _flag_error(e) from None

  exp.process_checks.append(check)
