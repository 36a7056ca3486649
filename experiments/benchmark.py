"""Round-time benchmark: the fast engine vs stock TFF FedAvg vs the compute floor.

  python -m experiments.benchmark                      # all scenarios, writes experiments/results/benchmark.{json,md}
  python -m experiments.benchmark --scenarios=cross_device_100x9 --rounds=5 --output_dir=/tmp/bench

Every scenario trains the 2NN (64-200-200-10 MLP) on scikit-learn digits examples (sampled per client with a fixed
seed; cross-silo clients sample with replacement), batch 10, 1 local epoch, client SGD 0.1, server SGD 1.0, the
whole population as the cohort. A round's time includes building its client inputs (tf.data for stock TFF, packed
tensors for ours). Reported: median seconds per round over `--rounds` rounds after `--warmup` rounds, client
updates/s, examples/s, peak RSS of this process and of the TFF worker, and the max |weight difference| between the
fast engine and stock TFF after the same rounds (same initial weights and data order).

* stock_tff: `tff.learning.algorithms.build_weighted_fed_avg` on the managed local C++ context.
* ours: `tff_fl.simulation.fast.build_fast_fed_avg` (one packed CLIENTS slot; `ours_2slots` uses two).
* floor: one `tf.function` doing the same SGD steps on a Keras model (per client: reset, train, weighted sum).
"""

import collections
import json
import os
import resource
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import psutil
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import tasks as tasks_lib
from tff_fl.data import client_data as client_data_lib
from tff_fl.data import sources
from tff_fl.simulation import contexts
from tff_fl.simulation import training_loop
from tff_fl.simulation.fast import engine as fast_engine
from tff_fl.simulation.fast import packing

SCENARIOS = collections.OrderedDict(
    cross_device_100x9=(100, 9), cross_device_50x18=(50, 18), cross_silo_10x900=(10, 900))
BATCH_SIZE, CLIENT_LR, SEED = 10, 0.1, 0

_SCENARIOS = flags.DEFINE_list('scenarios', list(SCENARIOS), f"scenarios to run: {', '.join(SCENARIOS)}")
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'timed rounds per engine and scenario (median reported)')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'untimed rounds first (compilation, worker start)')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'experiments/results', 'where benchmark.json/.md are written')


def build_task(num_clients: int, examples: int) -> tasks_lib.Task:
  """Digits examples split over `num_clients` clients of `examples` (+-2 for small clients) examples each."""
  data = sources.load_digits()
  rng = np.random.default_rng(SEED)
  sizes = [examples] * num_clients if examples > 100 else list(examples + rng.integers(-2, 3, num_clients))
  train = {}
  for c, n in enumerate(sizes):
    idx = rng.choice(len(data), size=n, replace=n > len(data) // num_clients)
    train[f'c{c:03d}'] = (data.x[idx], data.y[idx])
  test = {cid: (x[:1], y[:1]) for cid, (x, y) in train.items()}
  fed = client_data_lib.FederatedArrays(sorted(train), train, test, data.num_classes)
  return tasks_lib.Task('digits', fed, '2nn', tuple(data.x.shape[1:]), data.num_classes)


def build_floor(task: tasks_lib.Task):
  """One tf.function: per client reset to the global weights, SGD over its batches, add its weighted delta."""
  model = task.keras_model()
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  @tf.function
  def round_fn(global_weights, x, y, n):
    def train_client(c, acc, total):
      for v, w in zip(model.trainable_variables, global_weights):
        v.assign(w)

      def step(i, _):
        lo = i * BATCH_SIZE
        hi = tf.minimum(n[c], lo + BATCH_SIZE)
        with tf.GradientTape() as tape:
          loss = loss_fn(y[c, lo:hi], model(x[c, lo:hi], training=True))
        for v, g in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables)):
          v.assign_sub(CLIENT_LR * g)
        return i + 1, loss

      tf.while_loop(lambda i, _: i * BATCH_SIZE < n[c], step, (tf.constant(0), tf.constant(0.0)))
      weight = tf.cast(n[c], tf.float32)
      acc = [a + weight * (w - v) for a, w, v in zip(acc, global_weights, model.trainable_variables)]
      return c + 1, acc, total + weight

    zeros = [tf.zeros_like(w) for w in global_weights]
    _, acc, total = tf.while_loop(lambda c, *_: c < tf.shape(n)[0], train_client, (0, zeros, 0.0))
    return [w - a / total for w, a in zip(global_weights, acc)]

  return round_fn


def _worker_peak_mb() -> float:
  peaks = []
  for pid in contexts.running_workers():
    try:
      with open(f'/proc/{pid}/status') as f:
        peaks += [int(line.split()[1]) / 1024 for line in f if line.startswith('VmHWM')]
    except OSError:
      pass
  return max(peaks, default=0.0)


def _timed(run_round, rounds: int, warmup: int) -> tuple[float, list]:
  times = []
  for r in range(1, warmup + rounds + 1):
    t0 = time.perf_counter()
    run_round(r)
    if r > warmup:
      times.append(time.perf_counter() - t0)
  return statistics.median(times), times


def run_scenario(name: str, rounds: int, warmup: int) -> dict:
  num_clients, examples = SCENARIOS[name]
  task = build_task(num_clients, examples)
  cohort = task.client_ids
  init = task.initial_weights(SEED)
  client_opt = tff.learning.optimizers.build_sgdm(learning_rate=CLIENT_LR)
  loop_cfg = training_loop.LoopConfig(client_epochs_per_round=1, client_batch_size=BATCH_SIZE, seed=SEED)
  result = collections.OrderedDict(name=name, clients=num_clients,
                                   examples_per_client=sum(len(task.data.train[c][1]) for c in cohort) / num_clients)
  final = {}

  def run_process(key, process, inputs_fn):
    state = {'s': process.set_model_weights(process.initialize(), init)}

    def run_round(r):
      state['s'] = process.next(state['s'], inputs_fn(r, cohort)).state

    median, times = _timed(run_round, rounds, warmup)
    result[f'{key}_s_per_round'] = median
    result[f'{key}_round_times'] = times
    final[key] = [np.asarray(w) for w in process.get_model_weights(state['s']).trainable]

  stock = tff.learning.algorithms.build_weighted_fed_avg(task.model_fn, client_optimizer_fn=client_opt)
  run_process('stock_tff', stock, training_loop.default_client_inputs(task, loop_cfg))
  for slots in (1, 2):
    ours = fast_engine.build_fast_fed_avg(task.model_fn, client_opt, batch_size=BATCH_SIZE)
    run_process('ours' if slots == 1 else 'ours_2slots', ours,
                packing.build_client_inputs_fn(task, epochs=1, seed=SEED, num_groups=slots))

  floor_fn, inputs_fn = build_floor(task), packing.build_client_inputs_fn(task, epochs=1, seed=SEED)
  floor_state = {'w': [tf.constant(w) for w in init.trainable]}

  def floor_round(r):
    group = inputs_fn(r, cohort)[0]
    floor_state['w'] = floor_fn(floor_state['w'], group['x'], group['y'], group['n'])

  result['floor_s_per_round'], result['floor_round_times'] = _timed(floor_round, rounds, warmup)
  final['floor'] = [w.numpy() for w in floor_state['w']]

  examples_per_round = sum(len(task.data.train[c][1]) for c in cohort)
  for key in ('ours', 'stock_tff', 'floor'):
    result[f'{key}_client_updates_per_s'] = num_clients / result[f'{key}_s_per_round']
    result[f'{key}_examples_per_s'] = examples_per_round / result[f'{key}_s_per_round']
  result['speedup_vs_stock'] = result['stock_tff_s_per_round'] / result['ours_s_per_round']
  result['ours_over_floor'] = result['ours_s_per_round'] / result['floor_s_per_round']
  diff = lambda a, b: max(float(np.max(np.abs(x - y))) for x, y in zip(final[a], final[b]))
  result['max_abs_weight_diff_ours_vs_stock'] = diff('ours', 'stock_tff')
  result['max_abs_weight_diff_floor_vs_stock'] = diff('floor', 'stock_tff')
  result['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  result['worker_peak_rss_mb'] = _worker_peak_mb()
  return result


def markdown(results: list) -> str:
  rows = ['| scenario | clients x examples | stock TFF s/round | ours s/round | ours (2 slots) | floor s/round | '
          'speed-up vs stock | ours / floor | ours updates/s | ours examples/s | max weight diff vs stock |',
          '|---|---|---|---|---|---|---|---|---|---|---|']
  for r in results:
    rows.append(f"| {r['name']} | {r['clients']} x {r['examples_per_client']:.1f} | {r['stock_tff_s_per_round']:.3f} | "
                f"{r['ours_s_per_round']:.4f} | {r['ours_2slots_s_per_round']:.4f} | {r['floor_s_per_round']:.4f} | "
                f"{r['speedup_vs_stock']:.1f}x | {r['ours_over_floor']:.2f} | {r['ours_client_updates_per_s']:.0f} | "
                f"{r['ours_examples_per_s']:.0f} | {r['max_abs_weight_diff_ours_vs_stock']:.1e} |")
  return '\n'.join(rows) + '\n'


def main(argv):
  del argv
  unknown = [s for s in _SCENARIOS.value if s not in SCENARIOS]
  if unknown:
    raise app.UsageError(f"--scenarios must be from {', '.join(SCENARIOS)}; got {', '.join(unknown)}.")
  if _ROUNDS.value < 1 or _WARMUP.value < 0:
    raise app.UsageError(f'--rounds must be >= 1 and --warmup >= 0; got {_ROUNDS.value}, {_WARMUP.value}.')
  try:
    results = []
    for name in _SCENARIOS.value:
      results.append(run_scenario(name, _ROUNDS.value, _WARMUP.value))
      print(markdown(results[-1:]), flush=True)
  finally:
    contexts.shutdown()
  meta = collections.OrderedDict(
      cpu_count=os.cpu_count(), load_average_at_end=os.getloadavg(), tff_version=tff.__version__,
      tf_version=tf.__version__, rounds=_ROUNDS.value, warmup=_WARMUP.value,
      note='medians of wall-clock seconds; other processes shared the machine, so absolute numbers are noisy')
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  with open(os.path.join(_OUTPUT_DIR.value, 'benchmark.json'), 'w') as f:
    json.dump(collections.OrderedDict(meta=meta, scenarios=results), f, indent=2)
  table = markdown(results)
  with open(os.path.join(_OUTPUT_DIR.value, 'benchmark.md'), 'w') as f:
    f.write(f'Seconds per round (median of {_ROUNDS.value} after {_WARMUP.value} warm-up), {os.cpu_count()} cores, '
            f'TFF {tff.__version__}.\n\n{table}')
  print(table)


if __name__ == '__main__':
  app.run(main)
