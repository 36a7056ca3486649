"""Where a packed-engine round's time goes: TF's profiler over a few rounds, op time summed by op type and by op.

  taskset -c 0 .venv/bin/python -m experiments.profile_round [--entry=fedavg] [--rounds=5] [--top=25]

`--entry`: a name of `benchmark_algorithms.ENTRIES` (FedAvg, the other algorithms and extensions), run on the
benchmark's cross_device_100x9 scenario after 3 warm-up rounds. Prints the median CPU seconds per round and, per
round, the op time (ms) of the top op types and ops of the round's graph (TF's executor threads). The trace is read
from the profiler's XSpace file with `tensorflow.tsl.profiler.protobuf.xplane_pb2`.
"""

import collections
import glob
import statistics
import tempfile
import time

from absl import app
from absl import flags
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-direct-tensorflow-import

from experiments import benchmark_algorithms
from experiments import benchmark_setup as setup
from tff_fl import engine
from tff_fl.simulation import contexts

_ENTRY = flags.DEFINE_string('entry', 'fedavg', 'a name of benchmark_algorithms.ENTRIES')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'profiled rounds')
_TOP = flags.DEFINE_integer('top', 25, 'op types and ops printed')


def op_times(logdir: str) -> tuple[collections.Counter, collections.Counter]:
  """(ms by op type, ms by op name) summed over the trace's TF executor threads."""
  space = xplane_pb2.XSpace()
  with open(glob.glob(f'{logdir}/**/*.xplane.pb', recursive=True)[0], 'rb') as f:
    space.ParseFromString(f.read())
  by_type, by_op = collections.Counter(), collections.Counter()
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      if not line.name.startswith('tf_Compute'):
        continue
      for event in line.events:
        name = names.get(event.metadata_id, '')
        if ':' in name and '::' not in name:  # 'scope/op:OpType'; not executor events ('ExecutorState::Process').
          by_type[name.rsplit(':', 1)[1]] += event.duration_ps / 1e9
          by_op[name] += event.duration_ps / 1e9
  return by_type, by_op


def main(argv):
  del argv
  contexts.set_local_cpp_context()
  try:
    task = setup.build_task(*setup.SCENARIOS[benchmark_algorithms.SCENARIO])
    process, note = dict(benchmark_algorithms.ENTRIES)[_ENTRY.value](benchmark_algorithms.Context(task))
    state = process.set_model_weights(process.initialize(), task.initial_weights(setup.SEED))
    ids = task.client_ids
    for r in range(3):
      state = process.next(state, engine.Cohort.full(r, ids)).state
    logdir, times = tempfile.mkdtemp(prefix='profile_round_'), []
    tf.profiler.experimental.start(logdir)
    for r in range(3, 3 + _ROUNDS.value):
      start = time.process_time()
      state = process.next(state, engine.Cohort.full(r, ids)).state
      times.append(time.process_time() - start)
    tf.profiler.experimental.stop()
    by_type, by_op = op_times(logdir)
    rounds = _ROUNDS.value
    print(f'{note} ({process.client_execution}): {statistics.median(times):.4f} CPU s/round while profiled; op '
          f'time {sum(by_type.values()) / rounds:.1f} ms/round')
    for title, counter in (('op type', by_type), ('op', by_op)):
      print(f'-- ms/round by {title}')
      for name, ms in counter.most_common(_TOP.value):
        print(f'{ms / rounds:8.2f}  {name}')
  finally:
    contexts.shutdown()


if __name__ == '__main__':
  app.run(main)
