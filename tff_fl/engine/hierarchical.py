"""`HierarchicalProcess`: any algorithm's engine round at K edge servers, and a global step every `global_every`.

  edge:   cluster k's round = edge.next(edge_state_k, Cohort of k's reporters)   (one EngineProcess for all k)
  global: `tff_fl.algorithms.hierarchical.GlobalStep` over the K cluster models (a second aggregator, the global
          optimizer, cluster mixing)

The edge process is one `EngineProcess` (any `Algorithm` definition, extensions and edge aggregator) shared by the
clusters; each cluster keeps its own edge state (its cluster model, the algorithm's server extra, extension,
aggregator and finalizer states). Client states (stateful algorithms) live in the edge process's store, keyed by
client, so one store serves every cluster. The definition's hyperparameters are shared by every edge (e.g.
SCAFFOLD's N is what the caller passed, typically the population, so each cluster's c moves by 1/N of its clients'
sum); extras stay per cluster across global steps, which replace only the cluster models. TFF has two placements, so
one federated computation cannot hold K cohorts of different sizes: `next` runs the K edge rounds, then the global
step, and implements the package's process protocol (`tff_fl.engine.process`).

State (numpy, checkpointable): OrderedDict(round=int32, global_model=ModelWeights, global_state=OrderedDict(
aggregator, finalizer), clusters=K edge states, cluster_examples=float32[K] examples trained per cluster since the
last global step).

Metrics of a round: client_work/train (all clusters: counts summed, loss/accuracy example-weighted), one entry per
extension with per-client measurements (summarized over all reporters), hierarchy/{global_step, active_clusters},
comm/{client_edge, edge_global}/bytes_{up,down} (from tensor sizes: down = model + algorithm extra per sampled
client, up = update + upload per reporter; edge<->global: K x update up, K x model down on global-step rounds),
cluster/<k>/{clients, train_loss, train_examples, <the edge round's aggregator/finalizer/extension metrics>} and,
on global-step rounds, global_aggregation/{aggregator, finalizer}. client_ids / client_metrics: every reporter, in
the cohort's order.
"""

import collections
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow_federated as tff

from tff_fl.algorithms import hierarchical as hierarchical_lib
from tff_fl.algorithms import model_types
from tff_fl.engine import packing
from tff_fl.engine import process as process_lib


def _bytes(type_spec) -> int:
  """Payload bytes; 0 for the engine's placeholder of an empty value (a float32 scalar)."""
  if isinstance(type_spec, tff.TensorType) and type_spec.dtype == np.float32 and not type_spec.shape:
    return 0
  return hierarchical_lib.payload_bytes(type_spec)


class HierarchicalProcess:
  """Client -> edge -> global training on the engine (module docstring).

  Args:
    edge: the `EngineProcess` every cluster's edge server runs (`tff_fl.engine.build_process`: algorithm,
      extensions, edge aggregator, edge server optimizer, store).
    cluster_of: client id -> cluster index in [0, num_clusters).
    num_clusters: K >= 1.
    global_every: the global step runs after every `global_every`-th round (>= 1).
    cluster_mixing: in [0, 1): the part of its own model a cluster keeps after a global step.
    cluster_weighting: 'examples', 'uniform' or K non-negative numbers (`parse_cluster_weighting`).
    global_optimizer: applied to the aggregated cluster deltas; default SGD at learning rate 1.
    global_aggregator: any `tff.aggregators` factory over the K cluster deltas; default MeanFactory.
  """

  def __init__(self, edge: process_lib.EngineProcess, cluster_of: Mapping[str, int], num_clusters: int, *,
               global_every: int = 1, cluster_mixing: float = 0.0,
               cluster_weighting: Union[str, Sequence[float]] = 'examples',
               global_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
               global_aggregator: Optional[model_types.AnyFactory] = None):
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, (int, np.integer)) or num_clusters < 1:
      raise ValueError(f'num_clusters must be an int >= 1; got {num_clusters!r}.')
    if global_every < 1:
      raise ValueError(f'global_every must be >= 1; got {global_every}.')
    if not 0.0 <= cluster_mixing < 1.0:
      raise ValueError(f'cluster_mixing must be in [0, 1); got {cluster_mixing}.')
    bad = sorted({int(k) for k in cluster_of.values()} - set(range(num_clusters)))
    if bad:
      raise ValueError(f'cluster_of must map clients to clusters 0..{num_clusters - 1}; got cluster {bad[0]}.')
    self.edge, self.num_clusters = edge, int(num_clusters)
    self.cluster_of = {c: int(k) for c, k in cluster_of.items()}
    self.global_every, self.cluster_mixing = int(global_every), float(cluster_mixing)
    self.cluster_weighting = hierarchical_lib.parse_cluster_weighting(cluster_weighting, num_clusters)
    parts = edge.parts
    self.global_step = hierarchical_lib.GlobalStep(parts.weights_type, global_aggregator, global_optimizer)
    self.update_bytes = hierarchical_lib.payload_bytes(parts.weights_type.trainable)
    self.model_bytes = hierarchical_lib.payload_bytes(parts.weights_type)
    self.client_down_bytes = self.model_bytes + _bytes(parts.extra_type)
    self.client_up_bytes = hierarchical_lib.payload_bytes(parts.update_type) + _bytes(parts.upload_type)

  # Client states (stateful algorithms) are the edge process's, one store for every cluster.
  @property
  def store(self):
    return self.edge.store

  @property
  def stateful(self) -> bool:
    return self.edge.stateful

  @property
  def extensions(self) -> list:
    return self.edge.extensions

  @property
  def iterative_process(self) -> tff.templates.IterativeProcess:
    """The edge round (e.g. what `tff_fl.simulation.multi_worker.check_process` compiles for several workers)."""
    return self.edge.iterative_process

  def client_states(self, client_ids: Sequence[str]) -> np.ndarray:
    return self.edge.client_states(client_ids)

  def client_state_structure(self, vector: np.ndarray):
    return self.edge.client_state_structure(vector)

  # Process protocol.
  def initialize(self) -> collections.OrderedDict:
    edge = self.edge.initialize()
    return collections.OrderedDict(
        round=np.int32(0), global_model=self.edge.get_model_weights(edge),
        global_state=self.global_step.initialize(), clusters=tuple(edge for _ in range(self.num_clusters)),
        cluster_examples=np.zeros(self.num_clusters, np.float32))

  def get_model_weights(self, state) -> tff.learning.models.ModelWeights:
    return state['global_model']

  def cluster_model_weights(self, state) -> list:
    return [self.edge.get_model_weights(s) for s in state['clusters']]

  def set_model_weights(self, state, weights) -> collections.OrderedDict:
    """Sets the global model and every cluster model to `weights`."""
    state = collections.OrderedDict(state)
    state['global_model'] = weights
    state['clusters'] = tuple(self.edge.set_model_weights(s, weights) for s in state['clusters'])
    return state

  def split(self, cohort: packing.Cohort) -> list[packing.Cohort]:
    """K cohorts: cluster k's sampled clients and reporters (with their steps), in the cohort's order."""
    unknown = [c for c in cohort.sampled if c not in self.cluster_of]
    if unknown:
      raise ValueError(f"client '{unknown[0]}' has no cluster (cluster_of covers {len(self.cluster_of)} clients).")
    out = []
    for k in range(self.num_clusters):
      mine = [i for i, c in enumerate(cohort.client_ids) if self.cluster_of[c] == k]
      out.append(packing.Cohort(cohort.round_num, tuple(cohort.client_ids[i] for i in mine),
                                tuple(cohort.steps[i] for i in mine),
                                tuple(c for c in cohort.sampled if self.cluster_of[c] == k)))
    return out

  def next(self, state, cohort: packing.Cohort) -> process_lib.RoundOutput:
    """Edge rounds in every cluster with reporters; the global step when the round count % global_every == 0."""
    if not isinstance(cohort, packing.Cohort):
      raise TypeError(f'next needs a tff_fl.engine.Cohort; got {type(cohort).__name__}.')
    round_num = int(state['round']) + 1
    clusters, examples = list(state['clusters']), np.array(state['cluster_examples'], np.float32)
    per_cluster, train, per_client = collections.OrderedDict(), [], {}
    for k, sub in enumerate(self.split(cohort)):
      row = collections.OrderedDict(clients=len(sub.client_ids))
      if sub.client_ids:
        out = self.edge.next(clusters[k], sub)
        clusters[k] = out.state
        metrics = out.metrics['client_work']['train']
        examples[k] += float(metrics['num_examples'])
        train.append(metrics)
        row.update(train_loss=float(metrics['loss']), train_examples=int(metrics['num_examples']))
        row.update((key, value) for key, value in out.metrics.items() if key != 'client_work')
        per_client.update(zip(out.client_ids, out.client_metrics))
      per_cluster[str(k)] = row
    client_ids = tuple(c for c in cohort.client_ids if c in per_client)
    client_metrics = tuple(per_client[c] for c in client_ids)
    new_state = collections.OrderedDict(state, round=np.int32(round_num), clusters=tuple(clusters),
                                        cluster_examples=examples)
    comm = collections.OrderedDict(
        client_edge=collections.OrderedDict(bytes_up=len(client_ids) * self.client_up_bytes,
                                            bytes_down=len(cohort.sampled) * self.client_down_bytes),
        edge_global=collections.OrderedDict(bytes_up=0, bytes_down=0))
    metrics = collections.OrderedDict(client_work=collections.OrderedDict(
        train=hierarchical_lib.combine_train_metrics(train)))
    metrics.update(self._extension_metrics(client_metrics))
    metrics['hierarchy'] = collections.OrderedDict(global_step=0, active_clusters=int(np.sum(examples > 0)))
    metrics['comm'], metrics['cluster'] = comm, per_cluster
    if round_num % self.global_every == 0:
      new_state, metrics['global_aggregation'] = self._global_step(new_state)
      metrics['hierarchy']['global_step'] = 1
      comm['edge_global'] = collections.OrderedDict(bytes_up=self.num_clusters * self.update_bytes,
                                                    bytes_down=self.num_clusters * self.model_bytes)
    return process_lib.RoundOutput(new_state, metrics, client_ids, client_metrics)

  def _extension_metrics(self, client_metrics) -> collections.OrderedDict:
    """Each extension's `summarize` over every reporter's per-client measurements (all clusters)."""
    out = collections.OrderedDict()
    for e in self.edge.extensions:
      prefix = e.name + '__'
      names = [k for k in (client_metrics[0] if client_metrics else {}) if k.startswith(prefix)]
      if not names:
        continue
      own = collections.OrderedDict(
          (k[len(prefix):], np.array([m[k] for m in client_metrics], np.float32)) for k in names)
      summary = e.summarize(own)
      if summary:
        out[e.name] = summary
    return out

  def _global_step(self, state):
    weights = hierarchical_lib.cluster_weights(self.cluster_weighting, state['cluster_examples'])
    global_state, global_model, mixed, measurements = self.global_step.next(
        state['global_state'], state['global_model'], self.cluster_model_weights(state), weights,
        self.cluster_mixing)
    clusters = tuple(self.edge.set_model_weights(s, w) for s, w in zip(state['clusters'], mixed))
    new_state = collections.OrderedDict(state, global_model=global_model, global_state=global_state,
                                        clusters=clusters, cluster_examples=np.zeros(self.num_clusters, np.float32))
    return new_state, measurements


def build_hierarchical_process(edge: process_lib.EngineProcess, clusters: Sequence[int],
                               client_ids: Sequence[str], **kwargs) -> HierarchicalProcess:
  """`HierarchicalProcess` from `clusters[i]`, the cluster of `client_ids[i]` (e.g. `assign_clusters`' output);
  K = max cluster + 1; `kwargs` as `HierarchicalProcess`."""
  clusters = np.asarray(clusters, np.int64)
  if clusters.shape != (len(client_ids),) or (clusters.size and clusters.min() < 0):
    raise ValueError(f'clusters must hold one cluster index >= 0 per client ({len(client_ids)}); '
                     f'got shape {clusters.shape}.')
  num_clusters = kwargs.pop('num_clusters', int(clusters.max()) + 1 if clusters.size else 1)
  return HierarchicalProcess(edge, dict(zip(client_ids, clusters.tolist())), num_clusters, **kwargs)
