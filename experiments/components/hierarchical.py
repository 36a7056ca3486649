"""Component: hierarchical FL for ANY algorithm (`--hierarchical`) and the `regional_digits` task.

  --hierarchical --num_clusters=4 --global_every=5 --cluster_by=natural|labels|updates --cluster_mixing=0.5
  --cluster_weighting=examples|uniform|w1,...,wK

Every round each cluster's edge server runs the experiment's algorithm (`--algorithm`, its extensions and
`--aggregator`, with server SGD at the algorithm's default learning rate) over the cluster's reporting clients;
every --global_every rounds the global server combines the cluster models with a mean over clusters and the
--server_* optimizer (`tff_fl.engine.hierarchical`). Clusters are assigned once, before training. metrics.csv gains
cluster/<k>/{clients,train_loss,train_examples,<edge aggregator/finalizer metrics>} every round,
cluster/<k>/accuracy (the model cluster k's clients receive) and cluster/<k>/global_accuracy at eval rounds (on
`exp.eval_arrays` when a component sets them), and bytes per level per round: comm/client_edge/bytes_{up,down},
comm/edge_global/bytes_{up,down}, comm/long_haul/{bytes,cumulative_bytes}. Refused before training: a hierarchy flag without --hierarchical,
--engine=tff, and a robust --aggregator that a cluster's share of the cohort can be too small for.

`regional_digits` (the library's `tff_fl.tasks_regional`): digits in 4 regions with different label mixes (a class c
prefers region c mod 4 with probability 0.7) and a feature shift (region r's images are rotated by r x 90 degrees);
--num_clients are split evenly over the regions and named 'region<r>/client_<i>', so --cluster_by=natural --num_clusters=4 recovers the regions.
"""

import collections
import dataclasses
from typing import Callable, Optional

from absl import flags
from absl import logging
import numpy as np
import tensorflow_federated as tff

from experiments import experiment as experiment_lib
from experiments import flag_groups
from tff_fl import aggregators
from tff_fl import engine
from tff_fl import tasks as tasks_lib
from tff_fl import tasks_regional
from tff_fl.algorithms import builders
from tff_fl.algorithms import hierarchical
from tff_fl.algorithms import model_types
from tff_fl.engine import evaluation
from tff_fl.engine import hierarchical as hierarchical_process
from tff_fl.simulation import training_loop

FLAGS = flags.FLAGS
NUM_REGIONS = tasks_regional.NUM_REGIONS


@dataclasses.dataclass
class HierarchyConfig:
  hierarchical: bool = False
  num_clusters: int = 2
  global_every: int = 1
  cluster_by: str = 'labels'
  cluster_mixing: float = 0.0
  cluster_weighting: str = 'examples'


_HELP = {
    'hierarchical': 'run the algorithm hierarchically: an edge server per cluster every round, a global server '
                    'over the cluster models every --global_every rounds',
    'num_clusters': '--hierarchical: number of clusters (edge servers)',
    'global_every': '--hierarchical: the global server combines cluster models every this many rounds',
    'cluster_by': '--hierarchical: natural (ids <group>/<client>), labels (k-means on label histograms) or updates '
                  '(k-means on first-round update directions)',
    'cluster_mixing': '--hierarchical: in [0, 1), the part of its own model a cluster keeps after a global step '
                      '(0 = restart from the global model)',
    'cluster_weighting': '--hierarchical: cluster weights at the global step: examples, uniform, or '
                         'comma-separated numbers, one per cluster',
}


def define_flags() -> None:
  flag_groups.define_dataclass_flags(HierarchyConfig, _HELP)


def _flag_error(error: ValueError) -> ValueError:
  """A library error naming a Python argument (`num_clusters must ...`) -> the same naming the flag."""
  text = str(error)
  if any(text.startswith(f.name) for f in dataclasses.fields(HierarchyConfig)):
    return ValueError('--' + text)
  return error


def configure(exp) -> None:
  cfg = flag_groups.from_flags(HierarchyConfig)
  if not cfg.hierarchical:
    changed = [f'--{f.name}' for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != f.default]
    if changed:
      raise ValueError(f"{', '.join(changed)} appl{'ies' if len(changed) == 1 else 'y'} only with --hierarchical.")
    return
  loop = exp.loop_cfg
  try:
    if cfg.global_every < 1:
      raise ValueError(f'global_every must be >= 1; got {cfg.global_every}.')
    if not 0.0 <= cfg.cluster_mixing < 1.0:
      raise ValueError(f'cluster_mixing must be in [0, 1); got {cfg.cluster_mixing}.')
    hierarchical.parse_cluster_weighting(cfg.cluster_weighting, cfg.num_clusters)
    clusters = hierarchical.assign_clusters(
        cfg.cluster_by, exp.task, cfg.num_clusters, loop.seed, client_optimizer=exp.client_optimizer,
        initial_weights=exp.task.initial_weights(loop.seed), epochs=loop.client_epochs_per_round,
        batch_size=loop.client_batch_size)
  except ValueError as e:
    raise _flag_error(e) from None
  sizes = np.bincount(clusters, minlength=cfg.num_clusters)
  if cfg.global_every == 1 and cfg.cluster_mixing == 0.0 and cfg.cluster_weighting == 'examples':
    logging.warning('--hierarchical with --global_every=1, --cluster_mixing=0 and --cluster_weighting=examples: '
                    'every round the global model is the example-weighted mean of the edge models, which for '
                    'FedAvg with server SGD at learning rate 1 is FedAvg itself; --global_every > 1 or '
                    '--cluster_mixing > 0 lets the clusters drift apart.')

  def check_edges(e):  # When every component is configured: the sampler is another component's part.
    full = e.sampler is None or loop.clients_per_round >= len(e.task.client_ids)
    check_edge_aggregator(_aggregator_spec(), sizes, loop.clients_per_round if full else 0)

  exp.build_checks.append(check_edges)
  exp.process_factory = lambda e: build(e, cfg, clusters)
  exp.hooks.append(ClusterHook(lambda: exp.process, exp.task, clusters, loop.rounds_per_eval, loop.total_rounds,
                               eval_arrays_fn=lambda: exp.eval_arrays))


def _aggregator_spec() -> Optional[str]:
  """The --aggregator spec (the aggregation component's flag; robust stages there need a minimum cohort)."""
  return FLAGS['aggregator'].value if 'aggregator' in FLAGS else None


def check_edge_aggregator(spec: Optional[str], cluster_sizes, clients_per_round: int) -> None:
  """One-line ValueError if the edge aggregator `spec` (robust stages need a minimum cohort) can get fewer clients
  in some cluster than it needs: a cohort of `clients_per_round` (0 = unknown, e.g. availability sampling) may hold
  as few as `hierarchical.fewest_cluster_clients` clients of a cluster."""
  if not spec:
    return
  population = int(np.sum(cluster_sizes))
  needed = next((n for n in range(1, population + 1) if _accepts(spec, n)), None)
  fewest = hierarchical.fewest_cluster_clients(cluster_sizes, clients_per_round)
  if needed is None or needed <= max(fewest, 1):
    return
  enough = max(population - int(s) + needed for s in cluster_sizes)
  smallest = int(np.min(cluster_sizes))
  fix = (f'--clients_per_round >= {enough}' if smallest >= needed else
         f'fewer --num_clusters (the smallest cluster has {smallest} clients)')
  raise ValueError(f'--aggregator={spec} needs >= {needed} reporting clients per edge round, but with --hierarchical '
                   f'--num_clusters={len(cluster_sizes)} (cluster sizes '
                   f"{', '.join(str(int(s)) for s in cluster_sizes)}) a cluster may get {fewest} of the sampled "
                   f'clients; use {fix}, or a non-robust --aggregator.')


def _accepts(spec: str, cohort_size: int) -> bool:
  try:
    aggregators.build_aggregator(spec, cohort_size=cohort_size)
  except ValueError:
    return False
  return True


def build(exp, cfg: HierarchyConfig, clusters: np.ndarray) -> hierarchical_process.HierarchicalProcess:
  """The experiment's process: `exp.algorithm` (and its extensions, aggregator, store) at every edge server."""
  if exp.engine != 'packed':
    raise ValueError(f'--hierarchical runs on the packed engine; got --engine={exp.engine}.')
  loop = exp.loop_cfg
  try:
    edge = engine.build_task_process(
        exp.algorithm, exp.task, epochs=loop.client_epochs_per_round, batch_size=loop.client_batch_size,
        seed=loop.seed, client_optimizer=exp.client_optimizer, model_aggregator=exp.aggregator(),
        client_weighting=builders.weighting(exp.algo_cfg), extensions=exp.extensions, num_slots=exp.engine_slots,
        store=exp.store, runtime=exp.engine_runtime, client_axis=exp.client_axis)
  except ValueError as e:
    raise experiment_lib.process_error(e) from None
  try:
    return hierarchical_process.build_hierarchical_process(
        edge, clusters, exp.task.client_ids, num_clusters=cfg.num_clusters, global_every=cfg.global_every,
        cluster_mixing=cfg.cluster_mixing, cluster_weighting=cfg.cluster_weighting,
        global_optimizer=exp.server_optimizer)
  except ValueError as e:
    raise _flag_error(e) from None


class ClusterHook(training_loop.RoundHook):
  """Per-cluster accuracy at eval rounds and long-haul bytes every round, for hierarchical and flat processes.

  Flat processes: every client talks to the global server, so long-haul bytes = sampled clients x model bytes +
  reporting clients x update bytes, and cluster k's clients receive the global model. Hierarchical: long-haul =
  edge<->global bytes.
  """
  name = 'cluster'

  def __init__(self, process_fn: Callable, task: tasks_lib.Task, clusters: np.ndarray, rounds_per_eval: int,
               total_rounds: int, eval_arrays_fn: Callable[[], Optional[dict]] = lambda: None):
    self.process_fn, self.task, self.clusters = process_fn, task, np.asarray(clusters)
    self.num_clusters = int(self.clusters.max()) + 1
    self.rounds_per_eval, self.total_rounds = rounds_per_eval, total_rounds
    self.eval_arrays_fn, self.evaluator = eval_arrays_fn, None
    weights_type, _, _ = model_types.model_types(task.model_fn)
    self.update_bytes = hierarchical.payload_bytes(weights_type.trainable)
    self.model_bytes = hierarchical.payload_bytes(weights_type)
    self.cumulative, self.last = 0, collections.OrderedDict()

  def _accuracy(self, models) -> np.ndarray:
    if self.evaluator is None:  # Built at the first evaluation: a later component may set the eval arrays.
      self.evaluator = evaluation.build_evaluator(self.task, self.eval_arrays_fn())
    results = self.evaluator.evaluate_models(models, self.clusters, self.task.client_ids)
    return hierarchical.cluster_accuracy(results, self.clusters, self.num_clusters)

  def after_round(self, round_num, output, row) -> None:
    process = self.process_fn()
    if 'comm/edge_global/bytes_up' in row:
      long_haul = row['comm/edge_global/bytes_up'] + row['comm/edge_global/bytes_down']
    else:  # Sampled clients download the model; those that report (after dropout/stragglers) upload an update.
      reported = len(output.client_ids) if output.client_ids else row['clients']
      long_haul = row['clients'] * self.model_bytes + reported * self.update_bytes
    self.cumulative += int(long_haul)
    row['comm/long_haul/bytes'], row['comm/long_haul/cumulative_bytes'] = int(long_haul), self.cumulative
    if round_num % self.rounds_per_eval and round_num != self.total_rounds:
      return
    global_model = process.get_model_weights(output.state)
    models = (process.cluster_model_weights(output.state) if hasattr(process, 'cluster_model_weights')
              else [global_model] * self.num_clusters)
    own, glob = self._accuracy(models), self._accuracy([global_model] * self.num_clusters)
    for k in range(self.num_clusters):
      row[f'cluster/{k}/accuracy'], row[f'cluster/{k}/global_accuracy'] = float(own[k]), float(glob[k])
      self.last[f'cluster_{k}_accuracy'], self.last[f'cluster_{k}_global_accuracy'] = float(own[k]), float(glob[k])

  def checkpoint_arrays(self):
    return {'cumulative_bytes': np.array(self.cumulative, np.int64)}

  def restore_arrays(self, arrays) -> None:
    self.cumulative = int(arrays.get('cumulative_bytes', 0))

  def summary(self):
    return collections.OrderedDict(self.last, long_haul_bytes_total=self.cumulative)


regional_digits = tasks_regional.regional_digits  # The task lives in the library (`tff_fl.tasks_regional`).
