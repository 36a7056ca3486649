"""The engine's two runtimes side by side: the round in this process (`runtime='local'`) vs the same round on TFF's
worker (`runtime='tff'`), for FedAvg and SCAFFOLD on the benchmark's cross_device_100x9 data, rounds interleaved
(A B A B ...) in one process so that machine load hits both alike.

  taskset -c 0 .venv/bin/python -m experiments.benchmark_runtimes [--rounds=8]

Prints the median and minimum wall seconds per round of each (algorithm, runtime) and the ratio tff / local.
"""

import statistics
import time

from absl import app
from absl import flags
from absl import logging

from experiments import benchmark_setup as setup
from tff_fl import engine
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import scaffold
from tff_fl.simulation import contexts

_ROUNDS = flags.DEFINE_integer('rounds', 8, 'timed rounds per (algorithm, runtime), after 2 warm-up rounds')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  contexts.set_local_cpp_context()
  try:
    task = setup.build_task(100, 9)
    ids = task.client_ids
    runs = {}
    for name, algorithm in (('fedavg', fed_avg.FedAvg()), ('scaffold', scaffold.Scaffold(0.1, len(ids)))):
      for runtime in ('local', 'tff'):
        process = setup.build_packed(task, algorithm, runtime=runtime)
        state = process.set_model_weights(process.initialize(), task.initial_weights(setup.SEED))
        for r in range(2):
          state = process.next(state, engine.Cohort.full(r, ids)).state
        runs[(name, runtime)] = [process, state, []]
    for r in range(_ROUNDS.value):
      for run in runs.values():
        start = time.perf_counter()
        run[1] = run[0].next(run[1], engine.Cohort.full(r, ids)).state
        run[2].append(time.perf_counter() - start)
    for (name, runtime), (_, _, times) in runs.items():
      print(f'{name:9s} {runtime:6s} median {statistics.median(times):.4f} s/round  min {min(times):.4f}')
    for name in ('fedavg', 'scaffold'):
      ratio = statistics.median(runs[(name, 'tff')][2]) / statistics.median(runs[(name, 'local')][2])
      print(f'{name}: tff / local = {ratio:.2f}')
  finally:
    contexts.shutdown()


if __name__ == '__main__':
  app.run(main)
