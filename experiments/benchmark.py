"""Round-time benchmark: the packed engine vs stock TFF FedAvg vs the compute floor, and every algorithm.

  taskset -c 0 python -m experiments.benchmark            # all scenarios and extras -> experiments/results/benchmark.*
  taskset -c 0 python -m experiments.benchmark --scenarios=cross_device_100x9 --extras=algorithms --rounds=5
  taskset -c 0 python -m experiments.benchmark --scenarios=cross_device_100x9 --extras= --output_dir=/tmp/bench

Pin the process to one core (`taskset -c 0`; the TFF worker it starts inherits the affinity), so stock TFF, the
packed engine and the floor compete for the same core and their ratios are comparable (`meta.cpu_affinity`).

Every scenario trains the 2NN (64-200-200-10 MLP) on scikit-learn digits examples (sampled per client with a fixed
seed; cross-silo clients sample with replacement), batch 10, 1 local epoch, client SGD 0.1, server SGD 1.0, the
whole population as the cohort. A round's time includes building its client inputs (tf.data for stock TFF, packed
tensors for ours). Reported: median seconds per round over `--rounds` rounds after `--warmup` rounds (and median CPU
seconds of this process + its TFF worker), client updates/s, examples/s, peak RSS of this process and of the TFF
worker, and the max |weight difference| between the packed engine and stock TFF after the same rounds (same initial
weights and data order). Rows of scenarios not run
are kept from the old json (`commit` says which code measured a row; rows without it are from the fast engine that
bb03dfa replaced).

* stock_tff: `tff.learning.algorithms.build_weighted_fed_avg` on the managed local C++ context, one `tf.data`
  dataset per client (`tff_fl.simulation.stock_process.StockProcess`).
* ours: the packed engine, `tff_fl.engine.build_task_process(fed_avg.FedAvg(), ...)` (one CLIENTS slot;
  `ours_2slots` uses `num_slots=2`).
* floor: one `tf.function` doing the same SGD steps on a Keras model (per client: reset, train, weighted sum).

Algorithms (`--extras=algorithms`, key `algorithms`): every algorithm definition and extension on the packed engine
at cross_device_100x9, next to stock TFF FedAvg measured in the same run and the time before the redesign
(`--before_json`); plus packed per-client evaluation of 10,000 clients (`experiments/benchmark_algorithms.py`).

Memory (`--extras=memory`, key `memory`; takes hours): peak RSS of each engine's process and its TFF worker over a
long run of 10 clients per round out of 3,400 (`experiments/benchmark_memory.py`).

Scaling (`--extras=scaling`, key `scaling`): cross_device_100x9 and cross_silo_10x900 rounds on one worker (the
managed context) vs two local workers through TFF's mergeable-computation context
(`tff_fl.simulation.multi_worker`), for stock TFF and ours (two CLIENTS slots, one per worker).
"""

import collections
import json
import os
import resource

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from experiments import benchmark_algorithms
from experiments import benchmark_memory
from experiments import benchmark_setup as setup
from tff_fl import engine
from tff_fl import tasks as tasks_lib
from tff_fl.simulation import contexts
from tff_fl.simulation import multi_worker

SCENARIOS = setup.SCENARIOS
BATCH_SIZE, CLIENT_LR, SEED = setup.BATCH_SIZE, setup.CLIENT_LR, setup.SEED
EXTRAS = ('memory', 'scaling', 'algorithms')

_SCENARIOS = flags.DEFINE_list('scenarios', list(SCENARIOS), f"scenarios to run: {', '.join(SCENARIOS)}")
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'timed rounds per engine and scenario (median reported)')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'untimed rounds first (compilation, worker start)')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'experiments/results', 'where benchmark.json/.md are written')
_EXTRAS = flags.DEFINE_list('extras', list(EXTRAS), f"extra measurements: {', '.join(EXTRAS)} (results of those not "
                            'run, and rows of round-time scenarios not run, are kept from the old json)')
_MEMORY_ROUNDS = flags.DEFINE_integer('memory_rounds', 2000, 'memory scenario: rounds of our engine')
_MEMORY_STOCK_ROUNDS = flags.DEFINE_integer('memory_stock_rounds', 2000, 'memory scenario: rounds of stock TFF')
_MEMORY_CHILD = flags.DEFINE_string('memory_child', '', 'internal: run one memory run (stock_tff or ours) and print it')
_MEMORY_RUNS = flags.DEFINE_list('memory_runs', ['stock_tff', 'ours', 'ours_malloc_arena_max_2'],
                                 f"memory runs: {', '.join(benchmark_memory.RUNS)} (others are kept from the old json)")
_REWRITE_MARKDOWN = flags.DEFINE_bool('rewrite_markdown', False, 'only rewrite benchmark.md from benchmark.json')
_BEFORE_JSON = flags.DEFINE_string('before_json', 'experiments/results/benchmark_before.json',
                                   'algorithms extra: s/round of each algorithm before the redesign (json)')


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


def run_scenario(name: str, rounds: int, warmup: int) -> dict:
  num_clients, examples = SCENARIOS[name]
  task = setup.build_task(num_clients, examples)
  cohort = task.client_ids
  init = task.initial_weights(SEED)
  result = collections.OrderedDict(name=name, clients=num_clients,
                                   examples_per_client=sum(len(task.data.train[c][1]) for c in cohort) / num_clients,
                                   commit=setup.commit(), rounds=rounds, warmup=warmup)
  final = {}

  def run_process(key, process):
    state = {'s': process.set_model_weights(process.initialize(), init)}

    def run_round(r):
      state['s'] = process.next(state['s'], engine.Cohort.full(r, cohort)).state

    median, times, cpu_median, _ = setup.timed_cpu(run_round, rounds, warmup)
    result[f'{key}_s_per_round'] = median
    result[f'{key}_round_times'] = times
    result[f'{key}_cpu_s_per_round'] = cpu_median
    final[key] = [np.asarray(w) for w in process.get_model_weights(state['s']).trainable]

  run_process('stock_tff', setup.build_stock(task))
  for slots in (1, 2):
    run_process('ours' if slots == 1 else 'ours_2slots', setup.build_packed(task, num_slots=slots))

  floor_fn, packer = build_floor(task), setup.build_packer(task)
  floor_state = {'w': [tf.constant(w) for w in init.trainable]}

  def floor_round(r):
    group = packer.pack(engine.Cohort.full(r, cohort))[0]
    rows = lambda k: np.stack([group[k][c][group['order'][c]] for c in range(len(group['n']))])  # stream order
    floor_state['w'] = floor_fn(floor_state['w'], rows('x'), rows('y'), group['n'])

  result['floor_s_per_round'], result['floor_round_times'] = setup.timed(floor_round, rounds, warmup)
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
  result['worker_peak_rss_mb'] = setup.worker_peak_mb()
  return result


def run_scaling(rounds: int, warmup: int) -> list:
  """Seconds per round: one managed worker vs two local workers (mergeable context), stock TFF and ours."""
  rows = []
  for name in ('cross_device_100x9', 'cross_silo_10x900'):
    num_clients, examples = SCENARIOS[name]
    task = setup.build_task(num_clients, examples)
    init = task.initial_weights(SEED)
    engines = collections.OrderedDict(stock_tff=lambda: setup.build_stock(task),
                                      ours=lambda: setup.build_packed(task, num_slots=2))
    for engine_name, build in engines.items():
      row = collections.OrderedDict(name=name, engine=engine_name, clients=num_clients, commit=setup.commit())
      final = {}
      for workers in (1, 2):
        process = build()
        state = {'s': process.set_model_weights(process.initialize(), init)}

        def run_round(r, process=process, state=state):
          state['s'] = process.next(state['s'], engine.Cohort.full(r, task.client_ids)).state

        if workers == 1:
          row['s_per_round_1_worker'], _ = setup.timed(run_round, rounds, warmup)
        else:
          with multi_worker.worker_context(num_local=2):
            row['s_per_round_2_workers'], _ = setup.timed(run_round, rounds, warmup)
        final[workers] = [np.asarray(w) for w in process.get_model_weights(state['s']).trainable]
      row['speedup_2_workers'] = row['s_per_round_1_worker'] / row['s_per_round_2_workers']
      row['max_abs_weight_diff_2_vs_1'] = max(float(np.max(np.abs(a - b))) for a, b in zip(final[1], final[2]))
      rows.append(row)
      print(f'scaling: {json.dumps(row)}', flush=True)
  return rows


def markdown_scaling(scaling: list) -> str:
  rows = ['Scaling: one managed worker vs two local workers (mergeable context) on the same host.\n',
          '| scenario | engine | 1 worker s/round | 2 workers s/round | speed-up | max weight diff 2 vs 1 | code |',
          '|---|---|---|---|---|---|---|']
  for r in scaling:
    rows.append(f"| {r['name']} | {r['engine']} | {r['s_per_round_1_worker']:.4f} | {r['s_per_round_2_workers']:.4f} | "
                f"{r['speedup_2_workers']:.2f}x | {r['max_abs_weight_diff_2_vs_1']:.1e} | {setup.code(r)} |")
  return '\n'.join(rows) + '\n'


def markdown(results: list) -> str:
  rows = ['| scenario | clients x examples | stock TFF s/round | ours s/round | ours (2 slots) | floor s/round | '
          'speed-up vs stock | ours / floor | ours updates/s | ours examples/s | max weight diff vs stock | code |',
          '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in results:
    rows.append(f"| {r['name']} | {r['clients']} x {r['examples_per_client']:.1f} | {r['stock_tff_s_per_round']:.3f} | "
                f"{r['ours_s_per_round']:.4f} | {r['ours_2slots_s_per_round']:.4f} | {r['floor_s_per_round']:.4f} | "
                f"{r['speedup_vs_stock']:.1f}x | {r['ours_over_floor']:.2f} | {r['ours_client_updates_per_s']:.0f} | "
                f"{r['ours_examples_per_s']:.0f} | {r['max_abs_weight_diff_ours_vs_stock']:.1e} | "
                f"{setup.code(r)} |")
  return '\n'.join(rows) + '\n'


def write_markdown(out: dict) -> str:
  """Writes benchmark.md (output_dir) from the results `out`; returns its text."""
  meta = out['meta']
  parts = [f"Seconds per round (median of {meta.get('rounds')} after {meta.get('warmup')} warm-up), "
           f"{meta.get('cpu_count')} cores (process pinned to {meta.get('cpu_affinity', 'any')}), "
           f"TFF {meta.get('tff_version')}.\n\n{markdown(out['scenarios'])}"]
  if out.get('algorithms'):
    parts.append(benchmark_algorithms.markdown(out))
  if out.get('scaling'):
    parts.append(markdown_scaling(out['scaling']))
  if out.get('memory'):
    parts.append(benchmark_memory.markdown(out['memory']))
  with open(os.path.join(_OUTPUT_DIR.value, 'benchmark.md'), 'w') as f:
    f.write('\n'.join(parts))
  return '\n'.join(parts)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if _REWRITE_MARKDOWN.value:
    with open(os.path.join(_OUTPUT_DIR.value, 'benchmark.json')) as f:
      print(write_markdown(json.load(f)))
    return
  if _MEMORY_CHILD.value:
    try:
      run = benchmark_memory.memory_run(_MEMORY_CHILD.value, _MEMORY_ROUNDS.value)
    finally:
      contexts.shutdown()
    print('MEMORY_RESULT ' + json.dumps(run), flush=True)
    return
  unknown = ([s for s in _SCENARIOS.value if s not in SCENARIOS] + [e for e in _EXTRAS.value if e not in EXTRAS] +
             [m for m in _MEMORY_RUNS.value if m not in benchmark_memory.RUNS])
  if unknown:
    raise app.UsageError(f"--scenarios must be from {', '.join(SCENARIOS)}, --extras from {', '.join(EXTRAS)}, "
                         f"--memory_runs from {', '.join(benchmark_memory.RUNS)}; got {', '.join(unknown)}.")
  if _ROUNDS.value < 1 or _WARMUP.value < 0:
    raise app.UsageError(f'--rounds must be >= 1 and --warmup >= 0; got {_ROUNDS.value}, {_WARMUP.value}.')
  if min(_MEMORY_ROUNDS.value, _MEMORY_STOCK_ROUNDS.value) < benchmark_memory.MARK:
    raise app.UsageError(f'--memory_rounds and --memory_stock_rounds must be >= {benchmark_memory.MARK}.')
  affinity = sorted(os.sched_getaffinity(0))
  if len(affinity) > 1:
    print(f'warning: not pinned to one core (cores {affinity}); run under `taskset -c 0` for comparable ratios.',
          flush=True)
  json_path = os.path.join(_OUTPUT_DIR.value, 'benchmark.json')
  old = {}
  if os.path.exists(json_path):
    with open(json_path) as f:
      old = json.load(f)
  out = collections.OrderedDict(meta=old.get('meta', {}), scenarios=old.get('scenarios', []))
  out.update((k, v) for k, v in old.items() if k not in out)
  results = []
  try:
    if _SCENARIOS.value:
      for name in _SCENARIOS.value:
        results.append(run_scenario(name, _ROUNDS.value, _WARMUP.value))
        print(markdown(results[-1:]), flush=True)
      out['scenarios'] = setup.merge_scenarios(out['scenarios'], results)
      out['meta'] = collections.OrderedDict(
          cpu_count=os.cpu_count(), cpu_affinity=affinity, load_average_at_end=os.getloadavg(),
          tff_version=tff.__version__, tf_version=tf.__version__, rounds=_ROUNDS.value, warmup=_WARMUP.value,
          commit=setup.commit(), scenarios_run=list(_SCENARIOS.value),
          note='medians of wall-clock seconds; other processes shared the machine, so absolute numbers are noisy')
    if 'scaling' in _EXTRAS.value:
      out['scaling'] = run_scaling(_ROUNDS.value, _WARMUP.value)
      out['scaling_meta'] = collections.OrderedDict(rounds=_ROUNDS.value, warmup=_WARMUP.value, cpu_affinity=affinity,
                                                    load_average_at_end=os.getloadavg())
    if 'algorithms' in _EXTRAS.value:
      same_run = [r for r in results if r['name'] == benchmark_algorithms.SCENARIO]
      stock = (dict(s_per_round=same_run[0]['stock_tff_s_per_round'],
                    cpu_s_per_round=same_run[0]['stock_tff_cpu_s_per_round']) if same_run else None)
      out.update(benchmark_algorithms.run(_ROUNDS.value, _WARMUP.value, before_path=_BEFORE_JSON.value, stock=stock))
  finally:
    contexts.shutdown()
  if 'memory' in _EXTRAS.value:
    rounds_by_engine = dict(stock_tff=_MEMORY_STOCK_ROUNDS.value, ours=_MEMORY_ROUNDS.value)
    out['memory'] = benchmark_memory.run(_MEMORY_RUNS.value, rounds_by_engine, out.get('memory', {}))
    out['memory']['load_average_at_end'] = os.getloadavg()
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  with open(json_path, 'w') as f:
    json.dump(out, f, indent=2)
  print(write_markdown(out))


if __name__ == '__main__':
  contexts.set_local_cpp_context()  # Before flag parsing: even a usage error exits on this context.
  app.run(main)
