"""Hierarchical FL vs global-only FedAvg on regional data, and small cross-device / cross-silo regime runs.

  .venv/bin/python -m experiments.hierarchical_report [--rounds=40] [--out=/tmp/hierarchical_report.md]

Part 1 (regional_digits: 4 regions with their own label mix and image rotation, 10 clients each, 12 sampled per
round): FedAvg with every client talking to the global server vs hierarchical FL (edge every round, global every 5
rounds) with cluster mixing 0 and 0.5; per-cluster accuracy of the model each region's clients receive, accuracy
of the global model, and long-haul (edge <-> global, or client <-> global for FedAvg) bytes.
Part 2: the regime decision table from short real runs (cross-device: 1000 digits clients, 1% per round, dropout and
stragglers; cross-silo: 10 label-skewed silos, full participation, 5 local epochs). Every number is measured here.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

from experiments.components import hierarchical as hier_component  # pylint: disable=g-import-not-at-top
from tff_fl import engine  # pylint: disable=g-import-not-at-top
from tff_fl import tasks  # pylint: disable=g-import-not-at-top
from tff_fl.aggregators import robust  # pylint: disable=g-import-not-at-top
from tff_fl.algorithms import fed_avg  # pylint: disable=g-import-not-at-top
from tff_fl.algorithms import hierarchical  # pylint: disable=g-import-not-at-top
from tff_fl.engine import hierarchical as hierarchical_process  # pylint: disable=g-import-not-at-top
from tff_fl.simulation import contexts  # pylint: disable=g-import-not-at-top
from tff_fl.simulation import regimes  # pylint: disable=g-import-not-at-top
from tff_fl.simulation import training_loop  # pylint: disable=g-import-not-at-top

sgd = tff.learning.optimizers.build_sgdm


def _run(process, task, cfg, hooks=(), sampler=None, participation=None):
  with tempfile.TemporaryDirectory() as exp_dir:
    t0 = time.time()
    summary = training_loop.run_training(process, task, cfg, exp_dir, {'run': 'report'}, sampler=sampler,
                                         participation=participation, hooks=hooks, log=lambda _: None)
  summary['wall_seconds'] = time.time() - t0
  return summary


def _engine_fed_avg(task, cfg, client_lr, server=None, **kwargs):
  return engine.build_task_process(fed_avg.FedAvg(kwargs.pop('proximal_mu', 0.0)), task,
                                   epochs=cfg.client_epochs_per_round, batch_size=cfg.client_batch_size, seed=cfg.seed,
                                   client_optimizer=sgd(client_lr), server_optimizer=server, **kwargs)


def hierarchical_part(rounds: int) -> list[str]:
  task = hier_component.regional_digits(tasks.TaskConfig(task='regional_digits', model='2nn', num_clients=40))
  clusters = hierarchical.natural_clusters(task.client_ids, hier_component.NUM_REGIONS)
  label_clusters = hierarchical.assign_clusters('labels', task, hier_component.NUM_REGIONS, seed=0)
  agreement = max_matching_agreement(clusters, label_clusters)
  cfg = training_loop.LoopConfig(total_rounds=rounds, clients_per_round=12, client_batch_size=10,
                                 rounds_per_eval=rounds, rounds_per_checkpoint=rounds, seed=0)
  edge = _engine_fed_avg(task, cfg, 0.05)  # FedAvg, server SGD 1: the flat run and every edge server.
  runs = [('FedAvg, global only', None), ('hierarchical, global every 5, mixing 0', 0.0),
          ('hierarchical, global every 5, mixing 0.5', 0.5)]
  lines = ['| run | ' + ' | '.join(f'region {k} acc.' for k in range(4)) + ' | mean region acc. | global model acc. '
           '| long-haul MB | wall s |', '|' + '---|' * 9]
  for name, mixing in runs:
    if mixing is None:
      process = edge
    else:
      process = hierarchical_process.build_hierarchical_process(edge, clusters, task.client_ids, global_every=5,
                                                                cluster_mixing=mixing)
    hook = hier_component.ClusterHook(lambda p=process: p, task, clusters, rounds, rounds)
    s = _run(process, task, cfg, [hook])
    own = [s[f'cluster_{k}_accuracy'] for k in range(4)]
    lines.append(f'| {name} | ' + ' | '.join(f'{a:.3f}' for a in own) +
                 f" | {np.mean(own):.3f} | {s['eval_accuracy']:.3f} | {s['long_haul_bytes_total'] / 1e6:.1f} | "
                 f"{s['wall_seconds']:.0f} |")
    print(lines[-1], flush=True)
  lines += ['', f'k-means on client label histograms (`--cluster_by=labels`) puts {agreement:.0%} of the clients in '
                'the cluster of their region (best matching of cluster ids).']
  return lines


def max_matching_agreement(a: np.ndarray, b: np.ndarray) -> float:
  """Fraction of items on which two clusterings agree under the best one-to-one relabelling (brute force, K<=6)."""
  import itertools  # pylint: disable=g-import-not-at-top
  k = int(max(a.max(), b.max())) + 1
  return max(float(np.mean(np.array(perm)[b] == a)) for perm in itertools.permutations(range(k)))


def regime_part(rounds_device: int, rounds_silo: int) -> list[str]:
  lines = ['| regime | run | eval acc. | client acc. p10 | reported / sampled clients | wall s |', '|' + '---|' * 6]
  device = tasks.build_task(tasks.TaskConfig(model='logreg', num_clients=1000, partition='iid'))
  dcfg = training_loop.LoopConfig(total_rounds=rounds_device, clients_per_round=10, client_batch_size=2,
                                  rounds_per_eval=rounds_device, rounds_per_checkpoint=rounds_device, seed=0)
  sampler = regimes.AvailabilitySampler(device.client_ids, 10, 0, 'diurnal')
  device_runs = [
      ('FedAvg (server SGD 1), no failures', sgd(1.0), None),
      ('FedAvg, dropout 0.1 + stragglers 0.3, drop', sgd(1.0), regimes.Participation(0.1, 0.3, 'drop')),
      ('FedAvg, dropout 0.1 + stragglers 0.3, partial', sgd(1.0), regimes.Participation(0.1, 0.3, 'partial')),
      ('FedAvgM (server momentum 0.9, lr 1), stragglers partial', sgd(1.0, momentum=0.9),
       regimes.Participation(0.1, 0.3, 'partial')),
  ]
  for name, server, participation in device_runs:
    regime = regimes.RegimeParticipation(device, dcfg, participation) if participation else None
    hooks = [regimes.AvailabilityHook(sampler)] + ([regimes.RegimeHook(regime)] if regime else [])
    s = _run(_engine_fed_avg(device, dcfg, 0.1, server), device, dcfg, hooks, sampler, regime)
    reported = s.get('regime_total_reported', rounds_device * 10)
    lines.append(f"| cross-device | {name} | {s['eval_accuracy']:.3f} | {s['client_accuracy_p10']:.3f} | "
                 f"{reported} / {rounds_device * 10} | {s['wall_seconds']:.0f} |")
    print(lines[-1], flush=True)
  silo = tasks.build_task(tasks.TaskConfig(model='2nn', num_clients=10, partition='dirichlet', dirichlet_alpha=0.3))
  scfg = training_loop.LoopConfig(total_rounds=rounds_silo, clients_per_round=10, client_epochs_per_round=5,
                                  client_batch_size=20, rounds_per_eval=rounds_silo, rounds_per_checkpoint=rounds_silo)
  silo_runs = [
      ('FedAvg', dict()),
      ('FedProx mu=0.1', dict(proximal_mu=0.1)),
      ('FedAvg + coordinate median (robust)', dict(model_aggregator=robust.MedianFactory(cohort_size=10))),
  ]
  for name, kwargs in silo_runs:
    process = _engine_fed_avg(silo, scfg, 0.05, sgd(1.0), **kwargs)
    s = _run(process, silo, scfg, sampler=regimes.FullParticipationSampler(silo.client_ids))
    lines.append(f"| cross-silo | {name} | {s['eval_accuracy']:.3f} | {s['client_accuracy_p10']:.3f} | "
                 f"{rounds_silo * 10} / {rounds_silo * 10} | {s['wall_seconds']:.0f} |")
    print(lines[-1], flush=True)
  return lines


def main():
  contexts.set_local_cpp_context()  # Importing tff_fl installs no TFF execution context; this binary does.
  parser = argparse.ArgumentParser()
  parser.add_argument('--rounds', type=int, default=40)
  parser.add_argument('--device_rounds', type=int, default=150)
  parser.add_argument('--silo_rounds', type=int, default=15)
  parser.add_argument('--out', default='/tmp/hierarchical_report.md')
  args = parser.parse_args()
  try:
    part1 = hierarchical_part(args.rounds)
    part2 = regime_part(args.device_rounds, args.silo_rounds)
  finally:
    contexts.shutdown()
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    f.write(f'## Hierarchical vs global-only ({args.rounds} rounds)\n\n' + '\n'.join(part1) +
            f'\n\n## Regime runs (cross-device {args.device_rounds} rounds, cross-silo {args.silo_rounds} rounds)\n\n'
            + '\n'.join(part2) + '\n')
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
