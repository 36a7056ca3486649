"""Measurements for the stateful-clients work (issue 5); prints markdown for experiments/results/stateful.md.

  python -m experiments.stateful_report scaffold   # SCAFFOLD, FedDyn vs FedAvg rounds-to-accuracy, Synthetic(1,1)
  python -m experiments.stateful_report topk       # top-k with error feedback vs stateless top-k, digits
  python -m experiments.stateful_report fedper     # FedPer / Ditto / fine-tuning vs global, strongly non-IID digits
  python -m experiments.stateful_report disk_ram   # RSS of the disk store, 10,000 clients x 200k params

Every run is an algorithm definition on the packed engine in the one training loop (`run_training`), the same
code path as the binary.
"""

import collections
import csv
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import psutil  # pylint: disable=g-import-not-at-top
import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

from tff_fl import engine  # pylint: disable=g-import-not-at-top
from tff_fl import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
from tff_fl.aggregators import compression  # pylint: disable=g-import-not-at-top
from tff_fl.algorithms import ditto  # pylint: disable=g-import-not-at-top
from tff_fl.algorithms import error_feedback  # pylint: disable=g-import-not-at-top
from tff_fl.algorithms import fed_avg  # pylint: disable=g-import-not-at-top
from tff_fl.algorithms import feddyn  # pylint: disable=g-import-not-at-top
from tff_fl.algorithms import fedper  # pylint: disable=g-import-not-at-top
from tff_fl.algorithms import scaffold  # pylint: disable=g-import-not-at-top
from tff_fl.simulation import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
from tff_fl.simulation import client_state  # pylint: disable=g-import-not-at-top
from tff_fl.simulation import contexts  # pylint: disable=g-import-not-at-top
from tff_fl.simulation import training_loop  # pylint: disable=g-import-not-at-top

UNIFORM = tff.learning.ClientWeighting.UNIFORM
NUM_EXAMPLES = tff.learning.ClientWeighting.NUM_EXAMPLES
OUT = os.path.join(tempfile.gettempdir(), 'stateful_report')


def sgd(lr):
  return tff.learning.optimizers.build_sgdm(learning_rate=lr)


def run(name, task, algorithm, cfg, client_lr, weighting=NUM_EXAMPLES, aggregator=None):
  """Runs `algorithm` on the engine in the training loop; returns (metrics rows, summary, process, final state)."""
  exp_dir = os.path.join(OUT, name)
  shutil.rmtree(exp_dir, ignore_errors=True)
  hook = client_state.ClientStateHook(task.client_ids, exp_dir)

  def store_fn(dim):
    hook.store = client_state.InMemoryStore(dim)
    return hook.store

  process = engine.build_task_process(algorithm, task, epochs=cfg.client_epochs_per_round,
                                      batch_size=cfg.client_batch_size, seed=cfg.seed,
                                      client_optimizer=sgd(client_lr), client_weighting=weighting,
                                      model_aggregator=aggregator, store=store_fn)
  summary = training_loop.run_training(process, task, cfg, exp_dir, {'name': name}, hooks=[hook],
                                       log=lambda line: None)
  with open(os.path.join(exp_dir, 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  # The final server state from the last checkpoint; the process's store still holds the final client states.
  state = checkpoint_lib.CheckpointManager(os.path.join(exp_dir, 'checkpoints'), {}).restore(process.initialize())[1]
  return rows, summary, process, state


def rounds_to(rows, target):
  for row in rows:
    if row.get('eval_accuracy') and float(row['eval_accuracy']) >= target:
      return int(row['round'])
  return None


def scaffold_vs_fedavg():
  task = tasks_lib.build_task(tasks_lib.TaskConfig(task='synthetic', model='logreg', num_clients=30,
                                                   synthetic_alpha=1.0, synthetic_beta=1.0, seed=0))
  cfg = training_loop.LoopConfig(total_rounds=80, clients_per_round=10, client_epochs_per_round=5,
                                 client_batch_size=10, rounds_per_eval=2, rounds_per_checkpoint=1000, seed=0)
  lr, results = 0.01, collections.OrderedDict()
  results['FedAvg'] = run('fedavg_synth', task, fed_avg.FedAvg(), cfg, lr, UNIFORM)
  results['SCAFFOLD'] = run('scaffold_synth', task, scaffold.Scaffold(lr, 30), cfg, lr, UNIFORM)
  for alpha in (0.01, 0.1):
    results[f'FedDyn (alpha {alpha:g})'] = run(f'feddyn_{alpha:g}_synth', task, feddyn.FedDyn(alpha, 30), cfg, lr,
                                                UNIFORM)
  print('\n### SCAFFOLD and FedDyn vs FedAvg, Synthetic(1,1)\n')
  print('30 devices, 10 per round, logreg, E=5, B=10, client lr 0.01, server lr 1, uniform weighting, '
        f'{cfg.total_rounds} rounds, seed 0.\n')
  targets = (0.6, 0.7, 0.75, 0.8)
  print('| algorithm | ' + ' | '.join(f'rounds to {t:.0%}' for t in targets) + ' | final acc | final loss |')
  print('|---' * (len(targets) + 3) + '|')
  for name, (rows, summary, _, _) in results.items():
    print(f'| {name} | ' + ' | '.join(str(rounds_to(rows, t) or f'>{cfg.total_rounds}') for t in targets)
          + f" | {summary['eval_accuracy']:.4f} | {summary['eval_loss']:.4f} |")


def topk_vs_ef():
  task = tasks_lib.build_task(tasks_lib.TaskConfig(task='digits', model='logreg', num_clients=20,
                                                   partition='dirichlet', dirichlet_alpha=0.5, seed=0))
  cfg = training_loop.LoopConfig(total_rounds=40, clients_per_round=10, client_epochs_per_round=1,
                                 client_batch_size=10, rounds_per_eval=40, rounds_per_checkpoint=1000, seed=0)
  print('\n### Top-k with error feedback vs stateless top-k, digits\n')
  print('digits, 20 clients Dirichlet(0.5), 10 per round, logreg (650 params), E=1, B=10, client lr 0.1, '
        f'{cfg.total_rounds} rounds, seed 0. Bits = uplink bits per client per round (values + indices).\n')
  print('| uplink | bits/client/round | eval accuracy | eval loss |')
  print('|---|---|---|---|')
  _, summary, _, _ = run('dense_digits', task, fed_avg.FedAvg(), cfg, 0.1)
  print(f"| dense FedAvg | {32 * 650} | {summary['eval_accuracy']:.4f} | {summary['eval_loss']:.4f} |")
  for fraction in (0.01, 0.05, 0.2):
    for name, algorithm, aggregator in (
        ('top-k', fed_avg.FedAvg(), compression.topk(fraction)),
        ('top-k + EF', error_feedback.TopKErrorFeedback(fed_avg.FedAvg(), fraction),
         error_feedback.aggregator(fraction))):
      rows, summary, _, _ = run(f'{name}_{fraction}', task, algorithm, cfg, 0.1, aggregator=aggregator)
      bits = float(rows[-1]['aggregator/bits_per_client'])
      print(f"| {name} ({fraction}) | {bits:.0f} | {summary['eval_accuracy']:.4f} | {summary['eval_loss']:.4f} |")


def _stats(accuracies: dict):
  v = np.array([x for x in accuracies.values() if x is not None])
  return f'{v.mean():.4f} | {np.percentile(v, 10):.4f} | {np.percentile(v, 50):.4f} | {v.min():.4f}'


def fedper_vs_global():
  # PENDING (packed evaluation, another engineer): tff_fl.engine.evaluation's client_accuracies /
  # personal_accuracies / finetuned_accuracies replace the old per-client tf.data evaluations.
  from tff_fl.engine import evaluation  # pylint: disable=g-import-not-at-top
  task = tasks_lib.build_task(tasks_lib.TaskConfig(task='digits', model='2nn', num_clients=20, partition='shards',
                                                   shards_per_client=2, seed=0))
  cfg = training_loop.LoopConfig(total_rounds=30, clients_per_round=10, client_epochs_per_round=1,
                                 client_batch_size=10, rounds_per_eval=30, rounds_per_checkpoint=1000, seed=0)
  _, _, avg, avg_state = run('fedavg_shards', task, fed_avg.FedAvg(), cfg, 0.05)
  weights = avg.get_model_weights(avg_state)
  rows = [('FedAvg global model', evaluation.client_accuracies(task, weights))]
  for k in (1, 3):
    rows.append((f'FedAvg + fine-tune {k} epoch(s)',
                 evaluation.finetuned_accuracies(task, weights, sgd(0.05), epochs=k, batch_size=10, seed=0)))
  head = fedper.head_size_from_layers(task.keras_model(), 1)
  _, _, per, per_state = run('fedper_shards', task, fedper.FedPer(head), cfg, 0.05)
  rows.append(('FedPer server model (base + mean head)',
               evaluation.client_accuracies(task, per.get_model_weights(per_state))))
  rows.append(('FedPer personalized (base + own head)', evaluation.personal_accuracies(per, per_state, task)))
  for lam in (0.1, 1.0):
    _, _, dit, dit_state = run(f'ditto_{lam:g}_shards', task, ditto.Ditto(lam), cfg, 0.05)
    rows.append((f'Ditto lambda={lam:g} global model',
                 evaluation.client_accuracies(task, dit.get_model_weights(dit_state))))
    rows.append((f'Ditto lambda={lam:g} personal models (clients never sampled: global)',
                 evaluation.personal_accuracies(dit, dit_state, task)))
  print('\n### Personalization on a strongly non-IID split\n')
  print('digits, 20 clients, 2 label shards each (McMahan et al. split), 10 per round, 2nn (200-200), E=1, B=10, '
        'client lr 0.05, 30 rounds, seed 0. Per-client test accuracy (each client\'s held-out 20%).\n')
  print('| model | mean | p10 | median | min |')
  print('|---|---|---|---|---|')
  for name, acc in rows:
    print(f'| {name} | {_stats(acc)} |')


def disk_ram(num_clients=10_000, dim=200_000, cohort=100, rounds=5):
  directory = os.path.join(OUT, 'disk_store')
  shutil.rmtree(directory, ignore_errors=True)
  proc = psutil.Process()
  rss = lambda: proc.memory_info().rss / 2**20
  start_rss, t0 = rss(), time.time()
  store = client_state.DiskStore(directory, dim)
  peak = start_rss
  for lo in range(0, num_clients, cohort):  # Every client gets a state (as after many rounds).
    ids = [f'client_{i:05d}' for i in range(lo, lo + cohort)]
    store.put_many(ids, [np.full(dim, i, np.float32) for i in range(lo, lo + cohort)])
    peak = max(peak, rss())
  fill_seconds = time.time() - t0
  store.checkpoint_arrays()
  rng = np.random.default_rng(0)
  for r in range(rounds):  # Rounds: read a sampled cohort, write it back, checkpoint.
    ids = [f'client_{i:05d}' for i in sorted(rng.choice(num_clients, cohort, replace=False))]
    values = store.get_many(ids)
    store.put_many(ids, [v + 1 for v in values])
    store.checkpoint_arrays()
    peak = max(peak, rss())
  disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(directory) for f in fs)
  print('\n### Disk store memory\n')
  print(f'{num_clients} clients x {dim} float32 params ({num_clients * dim * 4 / 2**30:.2f} GiB of state), cohorts '
        f'of {cohort}; RSS measured with psutil in this process (includes the Python/TF/TFF imports).\n')
  print('| RSS before store | peak RSS while filling + 5 rounds | on disk | fill time |')
  print('|---|---|---|---|')
  print(f'| {start_rss:.0f} MiB | {peak:.0f} MiB | {disk / 2**30:.2f} GiB | {fill_seconds:.0f} s |')
  shutil.rmtree(directory, ignore_errors=True)


def main(argv):
  contexts.set_local_cpp_context()  # Importing tff_fl installs no TFF execution context; this binary does.
  parts = {'scaffold': scaffold_vs_fedavg, 'topk': topk_vs_ef, 'fedper': fedper_vs_global, 'disk_ram': disk_ram}
  names = argv[1:] or list(parts)
  bad = [n for n in names if n not in parts]
  if bad:
    sys.exit(f"error: unknown part {bad[0]!r}; allowed: {', '.join(parts)}")
  try:
    for name in names:
      parts[name]()
  finally:
    contexts.shutdown()


if __name__ == '__main__':
  main(sys.argv)
