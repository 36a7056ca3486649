"""SecAgg / SecAgg+ overhead and behaviour: bits and seconds per round, accuracy of b-bit quantization, abort rate.

  taskset -c 1 python -m experiments.secagg_benchmark                       # every part -> experiments/results/secagg.json
  taskset -c 1 python -m experiments.secagg_benchmark --parts=protocol --cohorts=10,100,1000

Parts (each writes its key of the json and prints a markdown table):
* protocol: the protocol alone (`tff_fl.aggregators.secagg.protocol` in `tf.function`s, outside TFF) for a d-parameter
  update (default 650 = the digits logreg), cohorts n (10..1000) x dropout (0..30%): one client's masking (step 3)
  and share (step 4) seconds (median over 3 clients), the server's recovery seconds (step 5; fed random share values
  of the right shape for n > 100: the work does not depend on them, exactness is checked at n <= 100 on real
  uploads), and bits uploaded per client; plain mean: 32 d bits, its server sum in numpy.
* engine: seconds per round (median of 3 after a warm-up) of FedAvg on the packed engine with the plain mean,
  secagg(16,0.5) and secagg_plus(16,0.5,k) at cohorts 10..100 and dropout 0 / 30% (digits logreg, 1 slot).
* accuracy: final eval accuracy of the binary (digits logreg, 20 clients, 10 per round, 40 rounds, uniform weighting)
  with the plain mean and secagg(b,0.5[,range]) for several b.
* abort: share of rounds that abort with t = ceil(threshold * holders) as the dropout rate approaches 1 - t/n: the
  regime's own dropout draws (`tff_fl.simulation.regimes.Participation`) and the server's abort rule
  (`protocol.recoverable`), next to the binomial prediction P[Binomial(n, 1 - p) < t] for SecAgg.

SecAgg+ uses k = 2 * ceil(log2 n) neighbours (Bell et al.: k = O(log n)).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from scipy import stats
import tensorflow as tf

from tff_fl.aggregators.secagg import protocol

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def plus_k(n: int) -> int:
  return 2 * math.ceil(math.log2(max(n, 2)))


def _timed(fn, repeats=3):
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def protocol_part(cohorts, dropouts, d, bits, threshold, seed=0):
  rows = []
  client_mask = tf.function(protocol.client_mask)
  client_shares = tf.function(protocol.client_shares)
  server = tf.function(protocol.server_recover)
  rng = np.random.default_rng(seed)
  for n in cohorts:
    for name, k in (('secagg', None), ('secagg_plus', plus_k(n))):
      kw = dict(bits=bits, threshold=threshold, k=k, seed=tf.constant(seed, tf.int64),
                round_num=tf.constant(1, tf.int64), max_clients=n)
      q = tf.constant(rng.integers(0, 2**bits // n, size=d))
      for p in dropouts:
        alive = np.ones(n, np.int32)
        alive[rng.choice(n, int(round(p * n)), replace=False)] = 0
        clients = [tf.constant(i, tf.int32) for i in np.flatnonzero(alive)[:3]]
        nt, alive_t = tf.constant(n, tf.int32), tf.constant(alive)
        client_mask(q, clients[0], nt, **kw)  # Trace.
        client_shares(clients[0], nt, alive_t, **kw)
        mask_s = float(np.median([_timed(lambda i=i: client_mask(q, i, nt, **kw), 1) for i in clients]))
        share_s = float(np.median([_timed(lambda i=i: client_shares(i, nt, alive_t, **kw), 1) for i in clients]))
        exact = None
        if n <= 100:  # Real uploads from every sampled client; only the survivors' reach the server.
          qs = rng.integers(0, 2**bits // n, size=(n, d))
          masked = np.stack([client_mask(tf.constant(qs[i]), tf.constant(i, tf.int32), nt, **kw).numpy()
                             for i in range(n)])
          masked_sum = masked[alive == 1].sum(0) % 2**bits
          shares = np.zeros([n, n], np.int64)
          for i in np.flatnonzero(alive):
            shares[i] = client_shares(tf.constant(i, tf.int32), nt, alive_t, **kw).numpy()
        else:
          masked_sum = rng.integers(0, 2**bits, size=d)
          shares = rng.integers(0, 2**31 - 1, size=(n, n)) * alive[:, None]
        masked_sum, shares = tf.constant(masked_sum, tf.int64), tf.constant(shares, tf.int64)
        out = server(masked_sum, shares, alive_t, nt, **kw)  # Trace.
        server_s = _timed(lambda: server(masked_sum, shares, alive_t, nt, **kw), 2 if n >= 300 else 3)
        total, aborted, survivors, t = [x.numpy() for x in out]
        if exact is None and n <= 100 and not aborted:
          exact = bool(np.array_equal(total, qs[alive == 1].sum(0) % 2**bits))
        upload = protocol.bits_per_client(d, bits, n, k)
        rows.append(dict(protocol=name, n=n, k=k, dropout=p, survivors=int(survivors), t=int(t), aborted=bool(aborted),
                         client_mask_s=mask_s, client_share_s=share_s, server_s=server_s, exact=exact,
                         bits_masked=upload['masked'], bits_shares=upload['shares'] + upload['keys'],
                         bits_total=upload['total']))
        print(rows[-1], flush=True)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    rows.append(dict(protocol='mean', n=n, k=None, dropout=0.0, survivors=n, t=None, aborted=False, client_mask_s=0.0,
                     client_share_s=0.0, server_s=_timed(lambda: vectors.sum(0)), exact=None, bits_masked=32 * d,
                     bits_shares=0, bits_total=32 * d))
  return rows


def engine_part(cohorts, dropouts, bits, threshold):
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from tff_fl import engine, tasks  # pylint: disable=g-import-not-at-top
  from tff_fl.aggregators.secagg import factory  # pylint: disable=g-import-not-at-top
  from tff_fl.algorithms import fed_avg, secagg_input  # pylint: disable=g-import-not-at-top
  from tff_fl.simulation import contexts  # pylint: disable=g-import-not-at-top
  contexts.set_local_cpp_context()  # Importing tff_fl installs no TFF execution context; this part does.
  task = tasks.build_task(tasks.TaskConfig(task='digits', model='logreg', num_clients=max(cohorts) * 2, seed=0))
  rows = []
  for n in cohorts:
    for name in ('mean', 'secagg', 'secagg_plus'):
      k = plus_k(n) if name == 'secagg_plus' else None
      agg = None if name == 'mean' else factory.SecAggMeanFactory(bits, threshold, k=k, max_clients=n)
      t0 = time.perf_counter()
      process = engine.build_task_process(
          fed_avg.FedAvg(), task, epochs=1, batch_size=10, seed=0, model_aggregator=agg,
          extensions=[] if name == 'mean' else [secagg_input.SecAggInput(n)],
          client_optimizer=tff.learning.optimizers.build_sgdm(0.1),
          client_weighting=tff.learning.ClientWeighting.UNIFORM)
      build_s = time.perf_counter() - t0
      state = process.set_model_weights(process.initialize(), task.initial_weights(0))
      for p in dropouts:
        times, aborted = [], []
        for r in range(4):
          sampled = tuple(np.random.default_rng([n, r]).choice(task.client_ids, n, replace=False))
          drop = set(np.random.default_rng([n, r, 1]).choice(n, int(round(p * n)), replace=False).tolist())
          cohort = engine.Cohort(r + 1, tuple(c for i, c in enumerate(sampled) if i not in drop), (), sampled)
          t0 = time.perf_counter()
          out = process.next(state, cohort)
          times.append(time.perf_counter() - t0)
          if name != 'mean':
            aborted.append(int(out.metrics['aggregator']['secagg']['aborted']))
        rows.append(dict(aggregator=name, n=n, k=k, dropout=p, round_s=float(np.median(times[1:])),
                         first_round_s=times[0], build_s=build_s, aborted_rounds=int(sum(aborted[1:]))))
        print(rows[-1], flush=True)
  return rows


def accuracy_part(specs, rounds):
  rows = []
  for spec in specs:
    with tempfile.TemporaryDirectory() as tmp:
      cmd = [sys.executable, '-m', 'experiments.train', f'--root_output_dir={tmp}', '--experiment_name=a',
             '--task=digits', '--model=logreg', '--num_clients=20', '--clients_per_round=10',
             f'--total_rounds={rounds}', f'--rounds_per_eval={rounds}', '--client_weighting=uniform',
             '--client_learning_rate=0.1', f'--aggregator={spec}', '--seed=0']
      t0 = time.perf_counter()
      proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
      if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
      with open(os.path.join(tmp, 'a', 'summary.json')) as f:
        summary = json.load(f)
      with open(os.path.join(tmp, 'a', 'metrics.csv')) as f:
        header = f.readline().strip().split(',')
        clipped = [float(line.split(',')[header.index(c)]) for line in f
                   for c in header if c.endswith('secagg/clipped_coordinates')]
    rows.append(dict(aggregator=spec, eval_accuracy=summary['eval_accuracy'], eval_loss=summary['eval_loss'],
                     clipped_coordinates_per_round=float(np.mean(clipped)) if clipped else 0.0,
                     seconds=time.perf_counter() - t0))
    print(rows[-1], flush=True)
  return rows


def abort_part(cohorts, rates, threshold, rounds):
  from tff_fl.simulation import regimes  # pylint: disable=g-import-not-at-top
  recoverable = tf.function(protocol.recoverable)
  rows = []
  for n in cohorts:
    ids = [f'c{i}' for i in range(n)]
    for name, k in (('secagg', None), ('secagg_plus', plus_k(n))):
      holders = protocol.degree(n, k) + 1
      t = protocol.threshold_count(threshold, holders)
      for p in rates:
        participation = regimes.Participation(dropout_rate=p, seed=1)
        aborted = 0
        for r in range(1, rounds + 1):
          alive = np.array([not participation.fate(r, c, 1).dropped for c in ids], np.int32)
          aborted += int(recoverable(tf.constant(alive), tf.constant(n, tf.int32), threshold=threshold, k=k, seed=tf.constant(0, tf.int64),
                                     round_num=tf.constant(r, tf.int64), max_clients=n)[0])
        predicted = float(stats.binom.cdf(t - 1, n, 1 - p)) if k is None else None
        rows.append(dict(protocol=name, n=n, k=k, t=t, holders=holders, dropout=p, one_minus_t_over_holders=1 - t / holders,
                         abort_rate=aborted / rounds, binomial_prediction=predicted, rounds=rounds))
        print(rows[-1], flush=True)
  return rows


def _fmt(v, digits=3):
  if v is None:
    return '—'
  if isinstance(v, bool):
    return 'yes' if v else 'no'
  if isinstance(v, float):
    return f'{v:.{digits}f}'
  return str(v)


def markdown(results) -> str:
  """Markdown tables of every part present in `results`."""
  out = []
  for key in [k for k in results if k.startswith('protocol')]:
    out += [f'#### {key}', '', '| protocol | n | k | dropout | survivors | t | aborted | client mask s | client shares s | '
            'server s | exact | bits/client (masked + keys/shares) |', '| ' + ' | '.join(['---'] * 12) + ' |']
    for r in results[key]:
      out.append(f"| {r['protocol']} | {r['n']} | {_fmt(r['k'])} | {r['dropout']:.0%} | {r['survivors']} | "
                 f"{_fmt(r['t'])} | {_fmt(r['aborted'])} | {r['client_mask_s']:.4f} | {r['client_share_s']:.4f} | "
                 f"{r['server_s']:.4f} | {_fmt(r['exact'])} | {r['bits_total']:,} ({r['bits_masked']:,} + "
                 f"{r['bits_shares']:,}) |")
    out.append('')
  if 'engine' in results:
    out += ['| aggregator | cohort | k | dropout | s/round (median) | first round s | build s | aborted (of 3) |',
            '| ' + ' | '.join(['---'] * 8) + ' |']
    for r in results['engine']:
      out.append(f"| {r['aggregator']} | {r['n']} | {_fmt(r['k'])} | {r['dropout']:.0%} | {r['round_s']:.3f} | "
                 f"{r['first_round_s']:.2f} | {r['build_s']:.1f} | {r['aborted_rounds']} |")
    out.append('')
  if 'accuracy' in results:
    out += ['| --aggregator | eval accuracy | eval loss | clipped coordinates / round |', '| --- | --- | --- | --- |']
    for r in results['accuracy']:
      out.append(f"| `{r['aggregator']}` | {r['eval_accuracy']:.4f} | {r['eval_loss']:.4f} | "
                 f"{r['clipped_coordinates_per_round']:.1f} |")
    out.append('')
  if 'abort' in results:
    out += ['| protocol | n | k | holders | t | 1 - t/holders | dropout | abort rate | binomial P[survivors < t] |',
            '| ' + ' | '.join(['---'] * 9) + ' |']
    for r in results['abort']:
      out.append(f"| {r['protocol']} | {r['n']} | {_fmt(r['k'])} | {r['holders']} | {r['t']} | "
                 f"{r['one_minus_t_over_holders']:.2f} | {r['dropout']:.0%} | {r['abort_rate']:.3f} | "
                 f"{_fmt(r['binomial_prediction'])} |")
    out.append('')
  return '\n'.join(out)


def main() -> None:
  tf.get_logger().setLevel('ERROR')
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--parts', default='protocol,engine,accuracy,abort')
  parser.add_argument('--cohorts', default='10,30,100,300,1000')
  parser.add_argument('--engine_cohorts', default='10,30,100')
  parser.add_argument('--dropouts', default='0,0.1,0.3')
  parser.add_argument('--d', type=int, default=650)
  parser.add_argument('--bits', type=int, default=16)
  parser.add_argument('--threshold', type=float, default=0.5)
  parser.add_argument('--accuracy_specs', default='mean;secagg(8,0.5)>mean;secagg(8,0.5,0.1)>mean;'
                      'secagg(12,0.5)>mean;secagg(12,0.5,0.1)>mean;secagg(16,0.5)>mean;secagg(24,0.5)>mean')
  parser.add_argument('--accuracy_rounds', type=int, default=40)
  parser.add_argument('--abort_threshold', type=float, default=0.7)
  parser.add_argument('--abort_rates', default='0.1,0.2,0.25,0.3,0.35,0.4')
  parser.add_argument('--abort_cohorts', default='10,100')
  parser.add_argument('--abort_rounds', type=int, default=200)
  parser.add_argument('--protocol_key', default='protocol', help='json key of the protocol part (e.g. a 2nd threshold)')
  parser.add_argument('--output', default=os.path.join(RESULTS, 'secagg.json'))
  parser.add_argument('--tables', action='store_true', help='only print the markdown tables of --output')
  args = parser.parse_args()
  ints = lambda s: [int(x) for x in s.split(',') if x]
  floats = lambda s: [float(x) for x in s.split(',') if x]
  results = {}
  if os.path.exists(args.output):
    with open(args.output) as f:
      results = json.load(f)
  if args.tables:
    print(markdown(results))
    return
  commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                          cwd=os.path.dirname(RESULTS)).stdout.strip()
  results.setdefault('meta', {})[args.parts] = dict(commit=commit, cpu_affinity=sorted(os.sched_getaffinity(0)),
                                                    argv=sys.argv[1:])
  parts = args.parts.split(',')
  if 'protocol' in parts:
    results[args.protocol_key] = protocol_part(ints(args.cohorts), floats(args.dropouts), args.d, args.bits, args.threshold)
  if 'engine' in parts:
    results['engine'] = engine_part(ints(args.engine_cohorts), [0.0, 0.3], args.bits, args.threshold)
  if 'accuracy' in parts:
    rows = accuracy_part(args.accuracy_specs.split(';'), args.accuracy_rounds)  # Replaces rows of the same specs.
    results['accuracy'] = [r for r in results.get('accuracy', []) if r['aggregator'] not in
                           {row['aggregator'] for row in rows}] + rows
  if 'abort' in parts:
    results['abort'] = abort_part(ints(args.abort_cohorts), floats(args.abort_rates), args.abort_threshold,
                                  args.abort_rounds)
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  with open(args.output, 'w') as f:
    json.dump(results, f, indent=1)
  print(markdown(results))


if __name__ == '__main__':
  main()
