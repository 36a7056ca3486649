"""Memory over long runs (benchmark.py `--extras=memory`, key `memory` in benchmark.json).

A population of 3,400 clients, 10 sampled per round (uniform without replacement, seeded per round, so nearly every
round brings new client inputs), each client 10+-2 digits examples drawn with replacement (digits has only 1,797
examples, so examples repeat across clients). Each engine runs in its own subprocess (`benchmark.py
--memory_child=stock_tff|ours`), so each peak is its own: VmHWM (peak RSS) and VmRSS of the Python process and of
its TFF worker at round 100 and at the end, and end / round-100 ratios. `ours` is the packed engine (FedAvg).
"""

import collections
import json
import os
import subprocess
import sys
import time

import numpy as np

from experiments import benchmark_setup as setup
from tff_fl import engine
from tff_fl.simulation import contexts

POPULATION, COHORT, EXAMPLES, MARK = 3400, 10, 10, 100
# Memory runs: label -> (engine, extra environment of its process). glibc's per-thread malloc arenas fragment in the
# multi-threaded worker_binary; MALLOC_ARENA_MAX=2 (inherited by the worker) caps them.
RUNS = collections.OrderedDict(
    stock_tff=('stock_tff', {}), ours=('ours', {}), ours_malloc_arena_max_2=('ours', {'MALLOC_ARENA_MAX': '2'}),
    stock_tff_malloc_arena_max_2=('stock_tff', {'MALLOC_ARENA_MAX': '2'}))


def _proc_status_mb(pid: int) -> dict:
  """VmHWM (peak RSS) and VmRSS of `pid` in MB."""
  out = {}
  with open(f'/proc/{pid}/status') as f:
    for line in f:
      if line.startswith(('VmHWM', 'VmRSS')):
        out[line.split(':')[0]] = int(line.split()[1]) / 1024
  return out


def _marks(round_num: int) -> dict:
  marks = collections.OrderedDict(round=round_num)
  for who, pids in (('python', [os.getpid()]), ('worker', contexts.running_workers()[:1])):
    for pid in pids:
      status = _proc_status_mb(pid)
      marks[f'{who}_peak_rss_mb'], marks[f'{who}_rss_mb'] = status['VmHWM'], status['VmRSS']
  return marks


def memory_run(engine_name: str, rounds: int) -> dict:
  """One engine over `rounds` rounds of the memory scenario (call in a fresh process); marks at rounds
  1, 10, 100, every 250 and the last."""
  task = setup.build_task(POPULATION, EXAMPLES)
  if engine_name == 'stock_tff':
    process = setup.build_stock(task)
  elif engine_name == 'ours':
    process = setup.build_packed(task)
  else:
    raise ValueError(f"--memory_child must be stock_tff or ours; got '{engine_name}'.")
  state = process.set_model_weights(process.initialize(), task.initial_weights(setup.SEED))
  ids = np.array(task.client_ids)
  marks, t0 = [], time.perf_counter()
  for r in range(1, rounds + 1):
    cohort = list(np.random.default_rng([setup.SEED, r]).choice(ids, COHORT, replace=False))
    state = process.next(state, engine.Cohort.full(r, cohort)).state
    if r in (1, 10, MARK, rounds) or r % 250 == 0:
      marks.append(_marks(r))
      marks[-1]['elapsed_s'] = time.perf_counter() - t0
  return collections.OrderedDict(engine=engine_name, rounds=rounds, marks=marks, commit=setup.commit())


def run(labels: list, rounds_by_engine: dict, old: dict) -> dict:
  """Each run in its own subprocess (peak RSS is per process); ratios of the end to round 100."""
  result = collections.OrderedDict((k, v) for k, v in old.items() if k in RUNS)
  result.update(
      population=POPULATION, cohort=COHORT, examples_per_client=EXAMPLES, mark_round=MARK,
      data='digits examples drawn with replacement, 10+-2 per client; 2NN, batch 10, 1 epoch')
  for label in labels:
    engine_name, env = RUNS[label]
    rounds = rounds_by_engine[engine_name]
    cmd = [sys.executable, '-m', 'experiments.benchmark', f'--memory_child={engine_name}',
           f'--memory_rounds={rounds}']
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', **env))
    lines = [l for l in proc.stdout.splitlines() if l.startswith('MEMORY_RESULT ')]
    if proc.returncode or not lines:
      raise RuntimeError(f'memory run {engine_name} failed ({proc.returncode}): {proc.stderr[-2000:]}')
    run = json.loads(lines[-1][len('MEMORY_RESULT '):])
    at = {m['round']: m for m in run['marks']}
    mark, end = at[MARK], run['marks'][-1]
    for who in ('python', 'worker'):
      for key in (f'{who}_peak_rss_mb', f'{who}_rss_mb'):
        if key in end:
          run[f'{key}_at_{MARK}'], run[f'{key}_at_end'] = mark.get(key), end[key]
          run[f'{key}_end_over_{MARK}'] = end[key] / mark[key] if mark.get(key) else None
    run['s_per_round'] = (end['elapsed_s'] - mark['elapsed_s']) / max(1, end['round'] - MARK)
    run['environment'] = env
    result[label] = run
    print(f'memory {label}: {json.dumps({k: v for k, v in run.items() if k != "marks"})}', flush=True)
  return result


def markdown(memory: dict) -> str:
  rows = [f"Memory: population {memory['population']} clients, {memory['cohort']} per round, "
          f"{memory['examples_per_client']}+-2 examples each ({memory['data']}). Peak RSS (VmHWM) in MB.\n",
          f"| engine | rounds | python peak @{MARK} | python peak @end | end / @{MARK} | "
          f"worker peak @{MARK} | worker peak @end | end / @{MARK} | s/round | code |",
          '|---|---|---|---|---|---|---|---|---|---|']
  for label in RUNS:
    if label in memory:
      r = memory[label]
      cells = []
      for who in ('python', 'worker'):
        key = f'{who}_peak_rss_mb'
        cells += [f"{r[f'{key}_at_{MARK}']:.0f}", f"{r[f'{key}_at_end']:.0f}",
                  f"{r[f'{key}_end_over_{MARK}']:.3f}"]
      rows.append(f"| {label} | {r['rounds']} | {' | '.join(cells)} | {r['s_per_round']:.4f} | {setup.code(r)} |")
  rounds = {memory[e]['rounds'] for e in RUNS if e in memory}
  if len(rounds) > 1:
    rows.append('\nThe engines ran different numbers of rounds (--memory_stock_rounds, --memory_rounds): stock TFF '
                'costs ~10x more per round, so its long run was shortened. Per-mark values are in benchmark.json.')
  return '\n'.join(rows) + '\n'
