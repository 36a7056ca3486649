"""Every algorithm and component on the packed engine (benchmark.py `--extras=algorithms`, key `algorithms`).

Scenario cross_device_100x9 (100 clients x 9+-2 digits examples, the whole population as the cohort; data,
optimizers and timing of `benchmark_setup`). One row per entry of `ENTRIES`:

  {"algorithm": NAME, "scenario": "cross_device_100x9", "s_per_round": S (packed engine),
   "stock_tff_fedavg_s_per_round": T (stock TFF FedAvg, same run), "before_s_per_round": B (--before_json), ...}

An entry is (name, builder): `builder(context)` returns (process, note). Builders import their definition / extension
lazily (`load`), so an entry whose module or class does not exist yet is skipped with a note instead of failing the
run; any other error (an import error inside an existing module included) is recorded in the row. Names follow the
"before" measurement (commit 4505331): `fedavg` is what the binary ran by default then (the stock tff.learning path;
its fast engine, `fedavg_fast`, is kept as `before_fast_engine_s_per_round`). Hyperparameters are those of that
measurement (FedProx mu 0.01, FedDyn alpha 0.01, Ditto lambda 0.1, top-k 5%, 2 label clusters with a global step
every round, DP-SGD clip 1 noise 1, constant 50% sparsity, 20% sign-flip attackers at scale 10). Wall and CPU
seconds (this process + its TFF worker) are both kept: CPU seconds compare better across runs on a shared machine.

Then, if `tff_fl.engine.evaluation.build_evaluator` exists, one packed per-client evaluation of 10,000 clients with
2-5 digits examples each (the population of the before measurement), timed after a 10-client warm-up call.
Targets (printed, never asserted): every algorithm >= 10x faster than stock TFF FedAvg and <= 1.5x our packed
FedAvg; the 10,000-client evaluation < 10 s.
"""

import collections
import importlib
import importlib.util
import json
import os
import time
import traceback

import numpy as np
import tensorflow as tf

from experiments import benchmark_setup as setup
from tff_fl import engine

SCENARIO = 'cross_device_100x9'
EVAL_CLIENTS = 10_000
MIN_SPEEDUP_VS_STOCK, MAX_RATIO_VS_FEDAVG, MAX_EVAL_S = 10.0, 1.5, 10.0


class Unavailable(Exception):
  """The entry's module or class does not exist (yet)."""


def load(module: str, attr: str = ''):
  """`module` (or its `attr`), raising `Unavailable` if it does not exist; a module that exists but fails to import
  raises its own error (the entry is then recorded as failed, not skipped)."""
  try:
    spec = importlib.util.find_spec(module)
  except ModuleNotFoundError:  # A parent package is missing.
    spec = None
  if spec is None:
    raise Unavailable(f'{module} does not exist yet')
  mod = importlib.import_module(module)
  if attr and not hasattr(mod, attr):
    raise Unavailable(f'{module}.{attr} not defined yet')
  return getattr(mod, attr) if attr else mod


class Context:
  """What a builder gets: the scenario's task and cohort, and `packed(algorithm, ...)`."""

  def __init__(self, task):
    self.task, self.client_ids = task, task.client_ids

  def packed(self, algorithm=None, **kwargs) -> engine.EngineProcess:
    return setup.build_packed(self.task, algorithm, **kwargs)

  def fed_avg(self, **kwargs):
    return load('tff_fl.algorithms.fed_avg', 'FedAvg')(**kwargs)


def _definition(module: str, cls: str, make_args=lambda s: {}):
  """Builder of an algorithm definition `module.cls(**make_args(setup))` on the packed engine."""
  def build(s):
    algorithm = load(module, cls)(**make_args(s))
    return s.packed(algorithm), f'{cls}({", ".join(f"{k}={v}" for k, v in make_args(s).items())})'
  return build


def _extension(module: str, cls: str, make_args, note: str):
  """Builder of FedAvg with the extension `module.cls(*args, **kwargs)`, (args, kwargs) = make_args(setup)."""
  def build(s):
    args, kwargs = make_args(s)
    return s.packed(s.fed_avg(), extensions=[load(module, cls)(*args, **kwargs)]), f'FedAvg + {cls}: {note}'
  return build


def _topk_ef(s):
  ef = load('tff_fl.algorithms.error_feedback')
  top_k = load('tff_fl.algorithms.error_feedback', 'TopKErrorFeedback')
  return (s.packed(top_k(s.fed_avg(), 0.05), model_aggregator=ef.aggregator(0.05)),
          'TopKErrorFeedback(FedAvg(), 0.05) with error_feedback.aggregator(0.05)')


def _fedper(s):
  fedper = load('tff_fl.algorithms.fedper')
  head = fedper.head_size_from_layers(s.task.keras_model(), 1)
  return s.packed(load('tff_fl.algorithms.fedper', 'FedPer')(head_size=head)), f'FedPer(head_size={head}): last layer'


def _hierarchical(s):
  build = load('tff_fl.engine.hierarchical', 'build_hierarchical_process')
  clusters = load('tff_fl.algorithms.hierarchical', 'assign_clusters')('labels', s.task, 2, setup.SEED)
  process = build(s.packed(s.fed_avg()), clusters, s.client_ids, global_every=1,
                  global_optimizer=setup.server_optimizer())
  return process, (f'HierarchicalProcess: FedAvg edges, 2 clusters by label k-means (sizes '
                   f'{np.bincount(clusters, minlength=2).tolist()}), global step every round')


def _per_example_loss():
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.NONE)


def _pruning_args(s):
  pruning = load('tff_fl.algorithms.pruning')
  schedule = pruning.build_schedule('constant', final_sparsity=0.5, begin_round=1, end_round=-1, frequency=1)
  return (s.task.keras_model, schedule), {}


def _augment_args(s):
  spec = load('tff_fl.data.preprocess').PreprocessSpec.from_flags('', 'flip,brightness(0.2)')
  return (spec, s.task.data.train), dict(seed=setup.SEED, epochs=1, batch_size=setup.BATCH_SIZE)


# (name, builder); names as in the before measurement. Add an algorithm or component here once it lands.
ENTRIES = [
    ('fedavg', _definition('tff_fl.algorithms.fed_avg', 'FedAvg')),
    ('fedprox', _definition('tff_fl.algorithms.fed_avg', 'FedAvg', lambda s: dict(proximal_mu=0.01))),
    ('fedsgd', _definition('tff_fl.algorithms.fed_sgd', 'FedSGD')),
    ('fednova', _definition('tff_fl.algorithms.fednova', 'FedNova',
                            lambda s: dict(client_learning_rate=setup.CLIENT_LR))),
    ('scaffold', _definition('tff_fl.algorithms.scaffold', 'Scaffold',
                             lambda s: dict(client_learning_rate=setup.CLIENT_LR, num_clients=len(s.client_ids)))),
    ('feddyn', _definition('tff_fl.algorithms.feddyn', 'FedDyn',
                           lambda s: dict(alpha=0.01, num_clients=len(s.client_ids)))),
    ('ditto', _definition('tff_fl.algorithms.ditto', 'Ditto', lambda s: dict(lam=0.1))),
    ('fedper', _fedper),
    ('fedavg_topk_ef', _topk_ef),
    ('hierarchical', _hierarchical),
    ('fedavg_sample_dp', _extension('tff_fl.algorithms.dp_sgd_client', 'SampleDP',
                                    lambda s: ((1.0, 1.0, _per_example_loss()), {}), 'DP-SGD clip 1.0, noise 1.0')),
    ('fedavg_pruning', _extension('tff_fl.algorithms.pruning', 'Pruning', _pruning_args,
                                  'ConstantSparsity(0.5) from round 1, every round')),
    ('fedavg_attack_sign_flip', _extension(
        'tff_fl.algorithms.attacks', 'ByzantineAttack',
        lambda s: (('sign_flip', 0.2, setup.SEED), dict(scale=10.0, num_classes=s.task.num_classes)),
        '20% sign-flip attackers, scale 10')),
    ('fedavg_drift_metrics', _extension('tff_fl.algorithms.drift', 'DriftMeasurements', lambda s: ((), {}),
                                        'per-client drift measurements')),
    ('fedavg_augment', _extension('tff_fl.algorithms.preprocessing', 'ClientPreprocessing', _augment_args,
                                  'flip, brightness(0.2)')),
]


def _train_loss(metrics):
  try:
    return float(metrics['client_work']['train']['loss'])
  except (KeyError, TypeError, ValueError):
    return None


def measure(process, client_ids, init, rounds: int, warmup: int) -> collections.OrderedDict:
  """Median s/round of `process` on the full cohort, its round times, last train loss, finite weights."""
  state, last = {'s': process.set_model_weights(process.initialize(), init)}, {}

  def run_round(r):
    output = process.next(state['s'], engine.Cohort.full(r, client_ids))
    state['s'], last['metrics'] = output.state, output.metrics

  median, times, cpu_median, cpu = setup.timed_cpu(run_round, rounds, warmup)
  weights = process.get_model_weights(state['s'])
  return collections.OrderedDict(
      s_per_round=median, round_times=times, cpu_s_per_round=cpu_median, cpu_round_times=cpu,
      last_train_loss=_train_loss(last['metrics']),
      finite_weights=bool(all(np.all(np.isfinite(np.asarray(w))) for w in weights.trainable)))


def read_before(path: str) -> dict:
  """The before measurement ({} if `path` is missing)."""
  if not path or not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def registered_without_entry() -> list:
  """Algorithm names in the binary's registry that `ENTRIES` does not measure (best effort)."""
  try:
    importlib.import_module('experiments.components')
  except Exception:  # pylint: disable=broad-except  (a component mid-port must not stop the benchmark)
    pass
  try:
    names = load('tff_fl.algorithms.builders').algorithms()
  except Unavailable:
    return []
  return [n for n in names if n not in {name for name, _ in ENTRIES}]


def evaluation(task, init, warmup_clients: int = 10) -> collections.OrderedDict:
  """Packed per-client evaluation of 10,000 clients x 2-5 digits examples (drawn with replacement, seed 0)."""
  build = load('tff_fl.engine.evaluation', 'build_evaluator')
  data = load('tff_fl.data.sources').load_digits()
  rng = np.random.default_rng(setup.SEED)
  sizes = rng.integers(2, 6, EVAL_CLIENTS)
  arrays = collections.OrderedDict()
  for i, n in enumerate(sizes):
    idx = rng.choice(len(data.y), size=int(n), replace=True)
    arrays[f'e{i:05d}'] = (data.x[idx], data.y[idx])
  t0 = time.perf_counter()
  evaluator = build(task.model_fn, arrays)
  build_s = time.perf_counter() - t0
  ids = list(arrays)
  t0 = time.perf_counter()
  evaluator(init, ids[:warmup_clients])
  warm_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  results = evaluator(init, ids)
  eval_s = time.perf_counter() - t0
  correct = sum(float(r['correct']) for r in results)
  predictions = sum(float(r['num_predictions']) for r in results)
  return collections.OrderedDict(
      clients=EVAL_CLIENTS, examples=int(sizes.sum()), eval_10000_clients_s=eval_s, build_s=build_s,
      warmup_call_s=warm_s, clients_returned=len(results), accuracy_initial_model=correct / max(predictions, 1.0),
      call='build_evaluator(model_fn, eval_arrays)(initial weights, 10,000 client ids), one call after a '
           f'{warmup_clients}-client warm-up call', target_met=eval_s < MAX_EVAL_S)


def run(rounds: int, warmup: int, *, before_path: str, stock=None) -> collections.OrderedDict:
  """benchmark.json keys `algorithms` (rows), `algorithms_meta`, `evaluation`; prints progress and targets.
  `stock`: dict(s_per_round, cpu_s_per_round) of stock TFF FedAvg on this scenario in this run (None: measured)."""
  task = setup.build_task(*setup.SCENARIOS[SCENARIO])
  init = task.initial_weights(setup.SEED)
  before = read_before(before_path)
  before_s = {r['algorithm']: r.get('s_per_round') for r in before.get('algorithms', [])}
  before_cpu = {r['algorithm']: r.get('cpu_s_per_round') for r in before.get('algorithms', [])}
  stock_note = 'measured in the cross_device_100x9 scenario of this run'
  if stock is None:
    stock = measure(setup.build_stock(task), task.client_ids, init, rounds, warmup)
    stock_note = 'measured by the algorithms extra of this run'
  stock_s_per_round = stock['s_per_round']
  print(f"algorithms: stock TFF FedAvg {stock_s_per_round:.4f} s/round, {stock['cpu_s_per_round']:.4f} CPU s/round "
        f'({stock_note})', flush=True)
  rows, s = [], Context(task)
  for name, builder in ENTRIES:
    row = collections.OrderedDict(algorithm=name, scenario=SCENARIO, s_per_round=None,
                                  stock_tff_fedavg_s_per_round=stock_s_per_round,
                                  before_s_per_round=before_s.get(name), before_cpu_s_per_round=before_cpu.get(name))
    if f'{name}_fast' in before_s:
      row['before_fast_engine_s_per_round'] = before_s[f'{name}_fast']
    try:
      t0 = time.perf_counter()
      process, row['note'] = builder(s)
      row['build_s'] = time.perf_counter() - t0
      row.update(measure(process, task.client_ids, init, rounds, warmup))
    except Unavailable as e:
      row['note'] = f'skipped: {e}'
    except Exception as e:  # pylint: disable=broad-except  (one entry's failure is recorded, the others still run)
      traceback.print_exc()
      row['note'] = 'FAILED'
      row['error'] = f'{type(e).__name__}: {e}'[:1000]
    rows.append(row)
    print(f"algorithms: {name}: {_f(row['s_per_round'], '.4f')} s/round, {_f(row.get('cpu_s_per_round'), '.4f')} "
          f"CPU s/round; {row.get('error') or row['note']}", flush=True)
  fedavg_s = next((r['s_per_round'] for r in rows if r['algorithm'] == 'fedavg'), None)
  for row in rows:
    if row['s_per_round'] is not None:
      row['speedup_vs_stock_tff_fedavg'] = stock_s_per_round / row['s_per_round']
      row['ratio_to_packed_fedavg'] = row['s_per_round'] / fedavg_s if fedavg_s else None
      row['target_met'] = bool(row['speedup_vs_stock_tff_fedavg'] >= MIN_SPEEDUP_VS_STOCK and
                               row['ratio_to_packed_fedavg'] is not None and
                               row['ratio_to_packed_fedavg'] <= MAX_RATIO_VS_FEDAVG)
      print(f"target {row['algorithm']}: {row['speedup_vs_stock_tff_fedavg']:.1f}x stock TFF FedAvg "
            f"(>= {MIN_SPEEDUP_VS_STOCK:g}), "
            f"{row['ratio_to_packed_fedavg']:.2f}x packed FedAvg (<= {MAX_RATIO_VS_FEDAVG:g}): "
            f"{'met' if row['target_met'] else 'NOT met'}", flush=True)
  try:
    evaluation_result = evaluation(task, init)
    print(f"target evaluation: {EVAL_CLIENTS} clients in {evaluation_result['eval_10000_clients_s']:.2f} s "
          f"(< {MAX_EVAL_S:g}): {'met' if evaluation_result['target_met'] else 'NOT met'}", flush=True)
  except Unavailable as e:
    evaluation_result = collections.OrderedDict(eval_10000_clients_s=None, note=f'skipped: {e}')
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    evaluation_result = collections.OrderedDict(eval_10000_clients_s=None, note='FAILED',
                                                error=f'{type(e).__name__}: {e}'[:1000])
  evaluation_result['before_s'] = before.get('eval_10000_clients_s')
  meta = collections.OrderedDict(
      scenario=SCENARIO, rounds=rounds, warmup=warmup, commit=setup.commit(),
      cpu_affinity=sorted(os.sched_getaffinity(0)),
      load_average_at_end=os.getloadavg(), stock_tff_fedavg_s_per_round=stock_s_per_round,
      stock_tff_fedavg_cpu_s_per_round=stock['cpu_s_per_round'], stock_tff_note=stock_note,
      before_json=before_path if before else None, before_commit=before.get('commit'),
      before_command=before.get('command'),
      before_stock_tff_fedavg_s_per_round=before.get('stock_tff_fedavg_s_per_round'),
      before_stock_tff_fedavg_cpu_s_per_round=(before.get('stock_tff_fedavg') or {}).get('cpu_s_per_round'),
      before_load_average=(before.get('meta') or {}).get('load_average_at_save'),
      registered_without_entry=registered_without_entry(),
      targets=f'>= {MIN_SPEEDUP_VS_STOCK:g}x faster than stock TFF FedAvg and <= {MAX_RATIO_VS_FEDAVG:g}x packed '
              f'FedAvg per algorithm; {EVAL_CLIENTS} clients evaluated in < {MAX_EVAL_S:g} s')
  return collections.OrderedDict(algorithms=rows, algorithms_meta=meta, evaluation=evaluation_result)


def _f(value, fmt):
  return '-' if value is None else format(value, fmt)


def _load(values):
  return '-' if not values else '/'.join(f'{v:.1f}' for v in values)


def markdown(out: dict) -> str:
  """The algorithms table (and the evaluation line) of benchmark.md."""
  meta, rows = out.get('algorithms_meta', {}), out['algorithms']
  lines = [f"Algorithms on the packed engine, {SCENARIO}: median s/round of {meta.get('rounds')} after "
           f"{meta.get('warmup')} warm-up (wall clock; CPU = this process + its TFF worker), core(s) "
           f"{meta.get('cpu_affinity')}, load average {_load(meta.get('load_average_at_end'))}, code "
           f"{meta.get('commit')}. Stock TFF FedAvg in the same run: "
           f"{_f(meta.get('stock_tff_fedavg_s_per_round'), '.3f')} s/round "
           f"({_f(meta.get('stock_tff_fedavg_cpu_s_per_round'), '.3f')} CPU s). Before = commit "
           f"{meta.get('before_commit')} (benchmark_before.json; stock TFF FedAvg "
           f"{_f(meta.get('before_stock_tff_fedavg_s_per_round'), '.3f')} s/round, "
           f"{_f(meta.get('before_stock_tff_fedavg_cpu_s_per_round'), '.3f')} CPU s in that run, whose load average "
           f"was {_load(meta.get('before_load_average'))}: compare CPU seconds across runs). Target: >= "
           f'{MIN_SPEEDUP_VS_STOCK:g}x faster than stock TFF FedAvg and <= {MAX_RATIO_VS_FEDAVG:g}x packed FedAvg '
           '(judged on wall clock; under load the CPU-seconds ratio is the steadier one).\n',
           '| algorithm | packed s/round | packed CPU s/round | before s/round | before CPU s/round | '
           'x faster than stock TFF FedAvg | / packed FedAvg | CPU / packed FedAvg CPU | target | note |',
           '|---|---|---|---|---|---|---|---|---|---|']
  fedavg_cpu = next((r.get('cpu_s_per_round') for r in rows if r['algorithm'] == 'fedavg'), None)
  for r in rows:
    cpu_ratio = (r['cpu_s_per_round'] / fedavg_cpu) if fedavg_cpu and r.get('cpu_s_per_round') else None
    target = '-' if r.get('target_met') is None else ('met' if r['target_met'] else 'NOT met')
    before = _f(r.get('before_s_per_round'), '.3f')
    if r.get('before_fast_engine_s_per_round') is not None:
      before += f" (fast engine {r['before_fast_engine_s_per_round']:.3f})"
    note = (r.get('error') or r.get('note') or '').replace('|', '/')
    lines.append(f"| {r['algorithm']} | {_f(r['s_per_round'], '.4f')} | {_f(r.get('cpu_s_per_round'), '.4f')} | "
                 f"{before} | {_f(r.get('before_cpu_s_per_round'), '.3f')} | "
                 f"{_f(r.get('speedup_vs_stock_tff_fedavg'), '.1f')} | "
                 f"{_f(r.get('ratio_to_packed_fedavg'), '.2f')} | {_f(cpu_ratio, '.2f')} | {target} | {note} |")
  if meta.get('registered_without_entry'):
    lines.append(f"\nRegistered algorithms without a benchmark entry: {', '.join(meta['registered_without_entry'])}.")
  ev = out.get('evaluation') or {}
  if ev.get('eval_10000_clients_s') is not None:
    lines.append(f"\nPer-client evaluation, {ev['clients']} clients ({ev['examples']} examples), packed: "
                 f"{ev['eval_10000_clients_s']:.2f} s (target < {MAX_EVAL_S:g} s: "
                 f"{'met' if ev['target_met'] else 'NOT met'}; before: {_f(ev.get('before_s'), '.1f')} s).")
  elif ev:
    lines.append(f"\nPer-client evaluation of {EVAL_CLIENTS} clients: {ev.get('error') or ev.get('note')}.")
  return '\n'.join(lines) + '\n'
