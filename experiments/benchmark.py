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

Memory (`--extras=memory`, key `memory` in benchmark.json): a long run over a population of 3,400 clients, 10
sampled per round (uniform without replacement, seeded per round, so nearly every round brings new client inputs),
each client 10+-2 digits examples drawn with replacement (digits has only 1,797 examples, so examples repeat across
clients). Each engine runs in its own subprocess, so each peak is its own: VmHWM (peak RSS) and VmRSS of the
Python process and of its TFF worker at round 100 and at the end, and end / round-100 ratios.

Scaling (`--extras=scaling`, key `scaling`): cross_device_100x9 and cross_silo_10x900 rounds on one worker (the
managed context) vs two local workers through TFF's mergeable-computation context
(`tff_fl.simulation.multi_worker`), for stock TFF and ours (two CLIENTS slots, one per worker).
"""

import collections
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import tasks as tasks_lib
from tff_fl.data import client_data as client_data_lib
from tff_fl.data import sources
from tff_fl.simulation import contexts
from tff_fl.simulation import multi_worker
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
EXTRAS = ('memory', 'scaling')
_EXTRAS = flags.DEFINE_list('extras', list(EXTRAS), f"extra measurements: {', '.join(EXTRAS)} (results of those not "
                            'run, and of round-time scenarios when --scenarios is empty, are kept from the old json)')
MEMORY_POPULATION, MEMORY_COHORT, MEMORY_EXAMPLES, MEMORY_MARK = 3400, 10, 10, 100
_MEMORY_ROUNDS = flags.DEFINE_integer('memory_rounds', 2000, 'memory scenario: rounds of our engine')
_MEMORY_STOCK_ROUNDS = flags.DEFINE_integer('memory_stock_rounds', 2000, 'memory scenario: rounds of stock TFF')
_MEMORY_CHILD = flags.DEFINE_string('memory_child', '', 'internal: run one memory run (stock_tff or ours) and print it')
# Memory runs: label -> (engine, extra environment of its process). glibc's per-thread malloc arenas fragment in the
# multi-threaded worker_binary; MALLOC_ARENA_MAX=2 (inherited by the worker) caps them.
MEMORY_RUNS = collections.OrderedDict(
    stock_tff=('stock_tff', {}), ours=('ours', {}), ours_malloc_arena_max_2=('ours', {'MALLOC_ARENA_MAX': '2'}),
    stock_tff_malloc_arena_max_2=('stock_tff', {'MALLOC_ARENA_MAX': '2'}))
_MEMORY_RUNS = flags.DEFINE_list('memory_runs', ['stock_tff', 'ours', 'ours_malloc_arena_max_2'],
                                 f"memory runs: {', '.join(MEMORY_RUNS)} (others are kept from the old json)")


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


def _proc_status_mb(pid: int) -> dict:
  """VmHWM (peak RSS) and VmRSS of `pid` in MB."""
  out = {}
  with open(f'/proc/{pid}/status') as f:
    for line in f:
      if line.startswith(('VmHWM', 'VmRSS')):
        out[line.split(':')[0]] = int(line.split()[1]) / 1024
  return out


def _memory_marks(round_num: int) -> dict:
  marks = collections.OrderedDict(round=round_num)
  for who, pids in (('python', [os.getpid()]), ('worker', contexts.running_workers()[:1])):
    for pid in pids:
      status = _proc_status_mb(pid)
      marks[f'{who}_peak_rss_mb'], marks[f'{who}_rss_mb'] = status['VmHWM'], status['VmRSS']
  return marks


def memory_run(engine: str, rounds: int) -> dict:
  """One engine over `rounds` rounds of the memory scenario (call in a fresh process); marks at rounds
  1, 10, 100, every 250 and the last."""
  task = build_task(MEMORY_POPULATION, MEMORY_EXAMPLES)
  client_opt = tff.learning.optimizers.build_sgdm(learning_rate=CLIENT_LR)
  if engine == 'stock_tff':
    process = tff.learning.algorithms.build_weighted_fed_avg(task.model_fn, client_optimizer_fn=client_opt)
    loop_cfg = training_loop.LoopConfig(client_epochs_per_round=1, client_batch_size=BATCH_SIZE, seed=SEED)
    inputs_fn = training_loop.default_client_inputs(task, loop_cfg)
  elif engine == 'ours':
    process = fast_engine.build_fast_fed_avg(task.model_fn, client_opt, batch_size=BATCH_SIZE)
    inputs_fn = packing.build_client_inputs_fn(task, epochs=1, seed=SEED)
  else:
    raise ValueError(f"--memory_child must be stock_tff or ours; got '{engine}'.")
  state = process.set_model_weights(process.initialize(), task.initial_weights(SEED))
  ids = np.array(task.client_ids)
  marks, t0 = [], time.perf_counter()
  for r in range(1, rounds + 1):
    cohort = list(np.random.default_rng([SEED, r]).choice(ids, MEMORY_COHORT, replace=False))
    state = process.next(state, inputs_fn(r, cohort)).state
    if r in (1, 10, MEMORY_MARK, rounds) or r % 250 == 0:
      marks.append(_memory_marks(r))
      marks[-1]['elapsed_s'] = time.perf_counter() - t0
  return collections.OrderedDict(engine=engine, rounds=rounds, marks=marks)


def run_memory(labels: list, rounds_by_engine: dict, old: dict) -> dict:
  """Each run in its own subprocess (peak RSS is per process); ratios of the end to round 100."""
  result = collections.OrderedDict((k, v) for k, v in old.items() if k in MEMORY_RUNS)
  result.update(
      population=MEMORY_POPULATION, cohort=MEMORY_COHORT, examples_per_client=MEMORY_EXAMPLES, mark_round=MEMORY_MARK,
      data='digits examples drawn with replacement, 10+-2 per client; 2NN, batch 10, 1 epoch')
  for label in labels:
    engine, env = MEMORY_RUNS[label]
    rounds = rounds_by_engine[engine]
    cmd = [sys.executable, '-m', 'experiments.benchmark', f'--memory_child={engine}', f'--memory_rounds={rounds}']
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', **env))
    lines = [l for l in proc.stdout.splitlines() if l.startswith('MEMORY_RESULT ')]
    if proc.returncode or not lines:
      raise RuntimeError(f'memory run {engine} failed ({proc.returncode}): {proc.stderr[-2000:]}')
    run = json.loads(lines[-1][len('MEMORY_RESULT '):])
    at = {m['round']: m for m in run['marks']}
    mark, end = at[MEMORY_MARK], run['marks'][-1]
    for who in ('python', 'worker'):
      for key in (f'{who}_peak_rss_mb', f'{who}_rss_mb'):
        if key in end:
          run[f'{key}_at_{MEMORY_MARK}'], run[f'{key}_at_end'] = mark.get(key), end[key]
          run[f'{key}_end_over_{MEMORY_MARK}'] = end[key] / mark[key] if mark.get(key) else None
    run['s_per_round'] = (end['elapsed_s'] - mark['elapsed_s']) / max(1, end['round'] - MEMORY_MARK)
    run['environment'] = env
    result[label] = run
    print(f'memory {label}: {json.dumps({k: v for k, v in run.items() if k != "marks"})}', flush=True)
  return result


def run_scaling(rounds: int, warmup: int) -> list:
  """Seconds per round: one managed worker vs two local workers (mergeable context), stock TFF and ours."""
  rows = []
  for name in ('cross_device_100x9', 'cross_silo_10x900'):
    num_clients, examples = SCENARIOS[name]
    task = build_task(num_clients, examples)
    init = task.initial_weights(SEED)
    client_opt = tff.learning.optimizers.build_sgdm(learning_rate=CLIENT_LR)
    loop_cfg = training_loop.LoopConfig(client_epochs_per_round=1, client_batch_size=BATCH_SIZE, seed=SEED)
    engines = collections.OrderedDict(
        stock_tff=(lambda: tff.learning.algorithms.build_weighted_fed_avg(task.model_fn, client_optimizer_fn=client_opt),
                   training_loop.default_client_inputs(task, loop_cfg)),
        ours=(lambda: fast_engine.build_fast_fed_avg(task.model_fn, client_opt, batch_size=BATCH_SIZE),
              packing.build_client_inputs_fn(task, epochs=1, seed=SEED, num_groups=2)))
    for engine, (build, inputs_fn) in engines.items():
      row = collections.OrderedDict(name=name, engine=engine, clients=num_clients)
      final = {}
      for workers in (1, 2):
        process = build()
        state = {'s': process.set_model_weights(process.initialize(), init)}

        def run_round(r, process=process, state=state, inputs_fn=inputs_fn):
          state['s'] = process.next(state['s'], inputs_fn(r, task.client_ids)).state

        if workers == 1:
          row['s_per_round_1_worker'], _ = _timed(run_round, rounds, warmup)
        else:
          with multi_worker.worker_context(num_local=2):
            row['s_per_round_2_workers'], _ = _timed(run_round, rounds, warmup)
        final[workers] = [np.asarray(w) for w in process.get_model_weights(state['s']).trainable]
      row['speedup_2_workers'] = row['s_per_round_1_worker'] / row['s_per_round_2_workers']
      row['max_abs_weight_diff_2_vs_1'] = max(float(np.max(np.abs(a - b))) for a, b in zip(final[1], final[2]))
      rows.append(row)
      print(f'scaling: {json.dumps(row)}', flush=True)
  return rows


def markdown_memory(memory: dict) -> str:
  rows = [f"Memory: population {memory['population']} clients, {memory['cohort']} per round, "
          f"{memory['examples_per_client']}+-2 examples each ({memory['data']}). Peak RSS (VmHWM) in MB.\n",
          f"| engine | rounds | python peak @{MEMORY_MARK} | python peak @end | end / @{MEMORY_MARK} | "
          f"worker peak @{MEMORY_MARK} | worker peak @end | end / @{MEMORY_MARK} | s/round |",
          '|---|---|---|---|---|---|---|---|---|']
  for engine in MEMORY_RUNS:
    if engine in memory:
      r = memory[engine]
      cells = []
      for who in ('python', 'worker'):
        key = f'{who}_peak_rss_mb'
        cells += [f"{r[f'{key}_at_{MEMORY_MARK}']:.0f}", f"{r[f'{key}_at_end']:.0f}",
                  f"{r[f'{key}_end_over_{MEMORY_MARK}']:.3f}"]
      rows.append(f"| {engine} | {r['rounds']} | {' | '.join(cells)} | {r['s_per_round']:.4f} |")
  rounds = {memory[e]['rounds'] for e in MEMORY_RUNS if e in memory}
  if len(rounds) > 1:
    rows.append('\nThe engines ran different numbers of rounds (--memory_stock_rounds, --memory_rounds): stock TFF '
                'costs ~10x more per round, so its long run was shortened. Per-mark values are in benchmark.json.')
  return '\n'.join(rows) + '\n'


def markdown_scaling(scaling: list) -> str:
  rows = ['Scaling: one managed worker vs two local workers (mergeable context) on the same host.\n',
          '| scenario | engine | 1 worker s/round | 2 workers s/round | speed-up | max weight diff 2 vs 1 |',
          '|---|---|---|---|---|---|']
  for r in scaling:
    rows.append(f"| {r['name']} | {r['engine']} | {r['s_per_round_1_worker']:.4f} | {r['s_per_round_2_workers']:.4f} | "
                f"{r['speedup_2_workers']:.2f}x | {r['max_abs_weight_diff_2_vs_1']:.1e} |")
  return '\n'.join(rows) + '\n'


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
  if _MEMORY_CHILD.value:
    try:
      run = memory_run(_MEMORY_CHILD.value, _MEMORY_ROUNDS.value)
    finally:
      contexts.shutdown()
    print('MEMORY_RESULT ' + json.dumps(run), flush=True)
    return
  unknown = ([s for s in _SCENARIOS.value if s not in SCENARIOS] + [e for e in _EXTRAS.value if e not in EXTRAS] +
             [m for m in _MEMORY_RUNS.value if m not in MEMORY_RUNS])
  if unknown:
    raise app.UsageError(f"--scenarios must be from {', '.join(SCENARIOS)}, --extras from {', '.join(EXTRAS)}, "
                         f"--memory_runs from {', '.join(MEMORY_RUNS)}; got {', '.join(unknown)}.")
  if _ROUNDS.value < 1 or _WARMUP.value < 0:
    raise app.UsageError(f'--rounds must be >= 1 and --warmup >= 0; got {_ROUNDS.value}, {_WARMUP.value}.')
  if min(_MEMORY_ROUNDS.value, _MEMORY_STOCK_ROUNDS.value) < MEMORY_MARK:
    raise app.UsageError(f'--memory_rounds and --memory_stock_rounds must be >= {MEMORY_MARK}.')
  json_path = os.path.join(_OUTPUT_DIR.value, 'benchmark.json')
  old = {}
  if os.path.exists(json_path):
    with open(json_path) as f:
      old = json.load(f)
  out = collections.OrderedDict(meta=old.get('meta', {}), scenarios=old.get('scenarios', []))
  out.update((k, v) for k, v in old.items() if k not in out)
  try:
    if _SCENARIOS.value:
      results = []
      for name in _SCENARIOS.value:
        results.append(run_scenario(name, _ROUNDS.value, _WARMUP.value))
        print(markdown(results[-1:]), flush=True)
      out['scenarios'] = results
      out['meta'] = collections.OrderedDict(
          cpu_count=os.cpu_count(), load_average_at_end=os.getloadavg(), tff_version=tff.__version__,
          tf_version=tf.__version__, rounds=_ROUNDS.value, warmup=_WARMUP.value,
          note='medians of wall-clock seconds; other processes shared the machine, so absolute numbers are noisy')
    if 'scaling' in _EXTRAS.value:
      out['scaling'] = run_scaling(_ROUNDS.value, _WARMUP.value)
      out['scaling_meta'] = collections.OrderedDict(rounds=_ROUNDS.value, warmup=_WARMUP.value,
                                                    load_average_at_end=os.getloadavg())
  finally:
    contexts.shutdown()
  if 'memory' in _EXTRAS.value:
    out['memory'] = run_memory(_MEMORY_RUNS.value, dict(stock_tff=_MEMORY_STOCK_ROUNDS.value, ours=_MEMORY_ROUNDS.value),
                               out.get('memory', {}))
    out['memory']['load_average_at_end'] = os.getloadavg()
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  with open(json_path, 'w') as f:
    json.dump(out, f, indent=2)
  meta = out['meta']
  parts = [f"Seconds per round (median of {meta.get('rounds')} after {meta.get('warmup')} warm-up), "
           f"{meta.get('cpu_count')} cores, TFF {meta.get('tff_version')}.\n\n{markdown(out['scenarios'])}"]
  if out.get('scaling'):
    parts.append(markdown_scaling(out['scaling']))
  if out.get('memory'):
    parts.append(markdown_memory(out['memory']))
  with open(os.path.join(_OUTPUT_DIR.value, 'benchmark.md'), 'w') as f:
    f.write('\n'.join(parts))
  print('\n'.join(parts))


if __name__ == '__main__':
  app.run(main)
