"""Population scaling: build time, s/round at a fixed cohort and peak RSS for 10^4, 10^5, 10^6 clients.

  nice -n 10 taskset -c 1 python -m experiments.benchmark_population --sizes=10000,100000,1000000 \
      --layouts=flat,dict --out=experiments/results/population

Task `mnist_population` (each client `--examples` MNIST training images drawn with replacement, 2 test images),
model logreg, FedAvg on the packed engine (one slot, in-process), cohort `--cohort` sampled uniformly per round,
batch 10, 1 epoch. Each (layout, size) runs in its own subprocess, so VmHWM is that run's own peak RSS.
Layouts: `flat` = the task's `FlatFederatedArrays` (one array per feature + offsets; the Packer's vectorised path);
`dict` = the same clients copied into today's dict-of-arrays `FederatedArrays` (per-client arrays, the Packer's
per-client loop, the evaluator's concatenation) - the pre-flat representation, built here from the flat one.
Per run: build seconds (task; for dict + the copy), process build seconds, median s/round over rounds 2..R, the
median pack seconds of the same cohorts (Packer.pack alone), and one evaluation of `--eval_clients` seeded clients.
"""

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def _vm_hwm_mb() -> float:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM'):
        return int(line.split()[1]) / 1024
  return float('nan')


def run_one(layout: str, size: int, cohort: int, rounds: int, examples: int, eval_clients: int) -> dict:
  """One measurement (call in a fresh process)."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top  (heavy; child only)
  from tff_fl import engine, tasks  # pylint: disable=g-import-not-at-top
  from tff_fl.algorithms import fed_avg  # pylint: disable=g-import-not-at-top
  from tff_fl.data import client_data  # pylint: disable=g-import-not-at-top
  from tff_fl.engine import evaluation  # pylint: disable=g-import-not-at-top
  from tff_fl.simulation import contexts, sampling  # pylint: disable=g-import-not-at-top

  contexts.ensure_local_cpp_context()
  out = collections.OrderedDict(layout=layout, clients=size, cohort=cohort, examples_per_client=examples)
  t0 = time.time()
  task = tasks.build_task(tasks.TaskConfig(task='mnist_population', num_clients=size, examples_per_client=examples))
  if layout == 'dict':
    flat = task.data
    ids = list(flat.client_ids)
    task.data = client_data.FederatedArrays(ids, {c: flat.train[c] for c in ids}, {c: flat.test[c] for c in ids},
                                            flat.num_classes)
  elif layout != 'flat':
    raise ValueError(f"--layouts must be flat or dict; got '{layout}'.")
  out['build_seconds'] = time.time() - t0
  out['rss_after_build_mb'] = _vm_hwm_mb()

  t0 = time.time()
  process = engine.build_task_process(
      fed_avg.FedAvg(), task, epochs=1, batch_size=10, seed=0,
      client_optimizer=tff.learning.optimizers.build_sgdm(0.1),
      server_optimizer=tff.learning.optimizers.build_sgdm(1.0))
  sampler = sampling.UniformSampler(task.client_ids, cohort, 0)
  state = process.set_model_weights(process.initialize(), task.initial_weights(0))
  out['process_build_seconds'] = time.time() - t0

  round_s, pack_s, sample_s = [], [], []
  for r in range(1, rounds + 1):
    t0 = time.time()
    ids = sampler.sample(r)
    sample_s.append(time.time() - t0)
    t0 = time.time()
    state = process.next(state, engine.Cohort.full(r, ids)).state
    round_s.append(time.time() - t0)
    t0 = time.time()
    process.packer.pack(engine.Cohort.full(r, ids))
    pack_s.append(time.time() - t0)
  out['first_round_seconds'] = round_s[0]
  out['round_seconds_median'] = statistics.median(round_s[1:] or round_s)
  out['round_seconds'] = round_s
  out['pack_seconds_median'] = statistics.median(pack_s[1:] or pack_s)
  out['sample_seconds_median'] = statistics.median(sample_s[1:] or sample_s)

  n_eval = min(eval_clients, size)
  rng = np.random.default_rng([0, 1])
  all_ids = task.client_ids
  eval_ids = [all_ids[i] for i in np.sort(rng.choice(size, n_eval, replace=False))]
  evaluator = evaluation.task_evaluator(task)
  evaluator(process.get_model_weights(state), eval_ids[:10])  # Trace once.
  t0 = time.time()
  summary = evaluation.summarize(eval_ids, evaluator(process.get_model_weights(state), eval_ids))
  out['eval_clients'] = n_eval
  out['eval_seconds'] = time.time() - t0
  out['eval_accuracy'] = summary['eval_accuracy']
  out['peak_rss_mb'] = _vm_hwm_mb()
  return out


def _markdown(rows, command: str) -> str:
  lines = ['# Population scaling (mnist_population, logreg, FedAvg, batch 10, 1 epoch, one core)', '',
           f'Command: `{command}`', '',
           '| layout | clients | build s | process build s | s/round (median) | pack s | eval s (clients) | '
           'peak RSS MB |', '|---|---|---|---|---|---|---|---|']
  for r in rows:
    if 'error' in r:
      lines.append(f"| {r['layout']} | {r['clients']:,} | {r['error']} | | | | | |")
      continue
    lines.append(f"| {r['layout']} | {r['clients']:,} | {r['build_seconds']:.2f} | {r['process_build_seconds']:.2f} | "
                 f"{r['round_seconds_median']:.3f} | {r['pack_seconds_median']:.3f} | "
                 f"{r['eval_seconds']:.2f} ({r['eval_clients']:,}) | {r['peak_rss_mb']:.0f} |")
  flat = {r['clients']: r for r in rows if r['layout'] == 'flat' and 'error' not in r}
  if len(flat) > 1:
    small, large = flat[min(flat)], flat[max(flat)]
    lines += ['', f"flat: s/round at {max(flat):,} clients / at {min(flat):,} clients = "
              f"{large['round_seconds_median'] / small['round_seconds_median']:.2f}; build of {max(flat):,} clients "
              f"{large['build_seconds']:.2f} s; peak RSS {large['peak_rss_mb'] / 1024:.2f} GiB."]
  lines += ['', 'build s: the task (dict: plus copying every client into its own arrays); process build s: tracing '
            "the round and initial state; s/round: median of rounds 2..R (round 1 traces); pack s: Packer.pack of the "
            "same cohorts alone (orders included); eval s: one evaluation of a seeded sample (trace excluded); peak "
            'RSS: VmHWM of the run\'s own process. dict at 10^6 clients is not run: the per-client copies of x alone '
            'would be 10^6 x 10 x 784 x 4 B = 31.4 GB (> the 24 GiB machine).']
  return '\n'.join(lines) + '\n'


def rewrite_markdown(out: str) -> None:
  """Rewrites `<out>.md` from `<out>.json`."""
  with open(out + '.json') as f:
    data = json.load(f)
  with open(out + '.md', 'w') as f:
    f.write(_markdown(data['rows'], data['command']))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='10000,100000,1000000')
  parser.add_argument('--layouts', default='flat,dict')
  parser.add_argument('--cohort', type=int, default=1000)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--examples', type=int, default=10)
  parser.add_argument('--eval_clients', type=int, default=10000)
  parser.add_argument('--skip', default='', help='layout:size pairs not to run (e.g. dict:1000000: does not fit)')
  parser.add_argument('--out', default='')
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    layout, size = args.child.split(':')
    print(json.dumps(run_one(layout, int(size), args.cohort, args.rounds, args.examples, args.eval_clients)))
    return
  skip = set(filter(None, args.skip.split(',')))
  rows = []
  for layout in args.layouts.split(','):
    for size in map(int, args.sizes.split(',')):
      key = f'{layout}:{size}'
      if key in skip:
        rows.append(collections.OrderedDict(layout=layout, clients=size, error='skipped (see --skip)'))
        continue
      cmd = [sys.executable, '-m', 'experiments.benchmark_population', f'--child={key}', f'--cohort={args.cohort}',
             f'--rounds={args.rounds}', f'--examples={args.examples}', f'--eval_clients={args.eval_clients}']
      proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), check=False)
      if proc.returncode:
        row = collections.OrderedDict(layout=layout, clients=size,
                                      error=f'exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}')
      else:
        row = json.loads(proc.stdout.strip().splitlines()[-1])
      print(json.dumps(row), flush=True)
      rows.append(row)
  if args.out:
    command = 'nice -n 10 taskset -c 1 python -m experiments.benchmark_population ' + ' '.join(
        a for a in (argv if argv is not None else sys.argv[1:]))
    with open(args.out + '.json', 'w') as f:
      json.dump(dict(command=command, rows=rows), f, indent=1)
    with open(args.out + '.md', 'w') as f:
      f.write(_markdown(rows, command))


if __name__ == '__main__':
  main()
