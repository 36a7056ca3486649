"""Component: hierarchical FL (`--algorithm=hierarchical`) and the `regional_digits` task.

Flags: --num_clusters, --global_every, --cluster_by=natural|labels|updates, --cluster_mixing, --cluster_weighting.
Clusters are assigned once, before training. The edge level uses the experiment's model aggregator (so DP / robust /
compression components apply to client updates); the global level uses the server optimizer with a mean over
clusters. metrics.csv gains cluster/<k>/{clients,train_loss,train_examples} every round, cluster/<k>/accuracy (the
model cluster k's clients receive) and cluster/<k>/global_accuracy at eval rounds, and bytes per level per round:
comm/client_edge/bytes_{up,down}, comm/edge_global/bytes_{up,down}, comm/long_haul/{bytes,cumulative_bytes}.
Must come after `regimes` in COMPONENTS (client inputs are grouped by cluster after dropout / stragglers).

`regional_digits`: digits in 4 regions with different label mixes (a class c prefers region c mod 4 with probability
0.7) and a feature shift (region r's images are rotated by r x 90 degrees); --num_clients are split evenly over the
regions and named 'region<r>/client_<i>', so --cluster_by=natural --num_clusters=4 recovers the regions.
"""

import collections
import dataclasses
from typing import Callable

import numpy as np

from experiments import flag_groups
from tff_fl import tasks as tasks_lib
from tff_fl.algorithms import builders
from tff_fl.algorithms import client_work as client_work_lib
from tff_fl.algorithms import hierarchical
from tff_fl.data import client_data
from tff_fl.data import partition as partition_lib
from tff_fl.data import sources
from tff_fl.simulation import training_loop

NUM_REGIONS = 4
REGION_PREFERENCE = 0.7


@dataclasses.dataclass
class HierarchyConfig:
  num_clusters: int = 2
  global_every: int = 1
  cluster_by: str = 'labels'
  cluster_mixing: float = 0.0
  cluster_weighting: str = 'examples'


_HELP = {
    'num_clusters': '--algorithm=hierarchical: number of clusters (edge servers)',
    'global_every': '--algorithm=hierarchical: the global server combines cluster models every this many rounds',
    'cluster_by': '--algorithm=hierarchical: natural (ids <group>/<client>), labels (k-means on label histograms) '
                  'or updates (k-means on first-round update directions)',
    'cluster_mixing': '--algorithm=hierarchical: in [0, 1), the part of its own model a cluster keeps after a '
                      'global step (0 = restart from the global model)',
    'cluster_weighting': "--algorithm=hierarchical: cluster weights at the global step: examples, uniform, or "
                         "comma-separated numbers, one per cluster",
}


def define_flags() -> None:
  flag_groups.define_dataclass_flags(HierarchyConfig, _HELP)


def configure(exp) -> None:
  cfg = flag_groups.from_flags(HierarchyConfig)
  if exp.algo_cfg.algorithm != 'hierarchical':
    changed = [f'--{f.name}' for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != f.default]
    if changed:
      raise ValueError(f"{', '.join(changed)} apply only to --algorithm=hierarchical; got "
                       f'--algorithm={exp.algo_cfg.algorithm}.')
    return
  hierarchical.parse_cluster_weighting(cfg.cluster_weighting, cfg.num_clusters)
  loop = exp.loop_cfg
  clusters = hierarchical.assign_clusters(
      cfg.cluster_by, exp.task, cfg.num_clusters, loop.seed, client_optimizer=exp.client_optimizer,
      initial_weights=exp.task.initial_weights(loop.seed), epochs=loop.client_epochs_per_round,
      batch_size=loop.client_batch_size)
  exp.hierarchy = cfg
  exp.client_inputs_fn = ClusterInputs(
      exp.client_inputs_fn or training_loop.default_client_inputs(exp.task, loop), exp.task.client_ids, clusters)
  exp.hooks.append(ClusterHook(lambda: exp.process, exp.task, clusters, loop.rounds_per_eval, loop.total_rounds))


def build(exp) -> hierarchical.HierarchicalProcess:
  cfg = getattr(exp, 'hierarchy', None)
  if cfg is None:
    raise ValueError("--algorithm=hierarchical needs the 'hierarchical' component in experiments/components.")
  return hierarchical.HierarchicalProcess(
      exp.task.model_fn, exp.client_optimizer, cfg.num_clusters, global_every=cfg.global_every,
      cluster_mixing=cfg.cluster_mixing, cluster_weighting=cfg.cluster_weighting,
      global_optimizer=exp.server_optimizer, edge_aggregator=exp.model_aggregator,
      client_weighting=builders.WEIGHTINGS[exp.algo_cfg.client_weighting])


builders.register('hierarchical', build)


class ClusterInputs:
  """client_inputs_fn for HierarchicalProcess: (round, cohort) -> K lists from `base` applied per cluster."""

  def __init__(self, base: Callable, client_ids, clusters: np.ndarray):
    self.base, self.num_clusters = base, int(np.max(clusters)) + 1
    self.cluster_of = dict(zip(client_ids, np.asarray(clusters).tolist()))

  def __call__(self, round_num: int, cohort) -> list:
    groups = hierarchical.group_by_cluster(cohort, self.cluster_of, self.num_clusters)
    return [self.base(round_num, group) for group in groups]


class ClusterHook(training_loop.RoundHook):
  """Per-cluster accuracy at eval rounds and long-haul bytes every round, for hierarchical and flat processes.

  Flat processes: every client talks to the global server, so long-haul bytes = sampled clients x model bytes +
  reporting clients x update bytes, and cluster k's clients receive the global model. Hierarchical: long-haul = edge<->global bytes.
  """
  name = 'cluster'

  def __init__(self, process_fn: Callable, task: tasks_lib.Task, clusters: np.ndarray, rounds_per_eval: int,
               total_rounds: int):
    self.process_fn, self.task, self.clusters = process_fn, task, np.asarray(clusters)
    self.num_clusters = int(self.clusters.max()) + 1
    self.rounds_per_eval, self.total_rounds = rounds_per_eval, total_rounds
    self.eval_fn = hierarchical.build_cluster_eval(task.model_fn)
    self.eval_data = [task.eval_dataset(c) for c in task.client_ids]
    weights_type, _, _ = client_work_lib.model_types(task.model_fn)
    self.update_bytes = hierarchical.payload_bytes(weights_type.trainable)
    self.model_bytes = hierarchical.payload_bytes(weights_type)
    self.cumulative, self.last = 0, collections.OrderedDict()

  def _accuracy(self, models) -> np.ndarray:
    per_client = [models[k] for k in self.clusters]
    return hierarchical.cluster_accuracy(self.eval_fn(per_client, self.eval_data), self.clusters, self.num_clusters)

  def after_round(self, round_num, output, row) -> None:
    process = self.process_fn()
    if 'comm/edge_global/bytes_up' in row:
      long_haul = row['comm/edge_global/bytes_up'] + row['comm/edge_global/bytes_down']
    else:  # Sampled clients download the model; those that report (after dropout/stragglers) upload an update.
      long_haul = row['clients'] * self.model_bytes + row.get('regime/reported', row['clients']) * self.update_bytes
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


def regional_digits(cfg: tasks_lib.TaskConfig) -> tasks_lib.Task:
  """Digits with regional label mixes and per-region rotations (module docstring); clients 'region<r>/client_<i>'."""
  if cfg.num_clients < NUM_REGIONS:
    raise ValueError(f'--num_clients must be >= {NUM_REGIONS} for --task=regional_digits; got {cfg.num_clients}.')
  data = sources.load_digits()
  rng = np.random.default_rng([cfg.seed, 41])
  preferred = data.y % NUM_REGIONS
  other = (preferred + rng.integers(1, NUM_REGIONS, data.y.size)) % NUM_REGIONS
  region = np.where(rng.random(data.y.size) < REGION_PREFERENCE, preferred, other)
  arrays = {}
  for r in range(NUM_REGIONS):
    idx = np.flatnonzero(region == r)
    x = np.rot90(data.x[idx], k=r, axes=(1, 2))
    n_clients = cfg.num_clients // NUM_REGIONS + int(r < cfg.num_clients % NUM_REGIONS)
    for i, part in enumerate(partition_lib.iid(idx.size, n_clients, cfg.seed + r)):
      arrays[f'region{r}/client_{i:04d}'] = (x[part], data.y[idx][part])
  fed = client_data.from_client_arrays(arrays, cfg.test_fraction, cfg.seed, data.num_classes)
  return tasks_lib.Task('regional_digits', fed, cfg.model, tuple(data.x.shape[1:]), data.num_classes)


tasks_lib.TASK_BUILDERS.setdefault('regional_digits', regional_digits)
