"""Hierarchical FL: client -> cluster (edge) server -> global server (HierFAVG, Liu et al. 2020, with cluster mixing).

Every round each cluster's edge server runs one FedAvg round over the cluster's sampled clients, starting from the
cluster model (`edge_process`: a stock-composed `LearningProcess`; the edge server is its SERVER, the cluster's
clients its CLIENTS, any `tff.aggregators` factory aggregates the client updates). Every `global_every` rounds the
global server runs `global_step`, a federated computation whose CLIENTS are the edge servers: each sends the delta
`global - cluster_model` (trainable weights), a second aggregator combines those deltas with cluster weights, the
global optimizer applies the result, and every cluster model becomes `mixing * cluster + (1 - mixing) * new_global`
(`mixing = 0`: all clusters restart from the global model, as in HierFAVG).

TFF has two placements, so one federated computation cannot hold K cohorts of different sizes; `HierarchicalProcess`
composes the two computations per round and offers the iterative-process protocol the training loop uses
(`initialize`, `next`, `get_model_weights`, `set_model_weights`). Its state (all numpy, checkpointable) is
OrderedDict(round=int32, global_model=ModelWeights, global_state=<aggregator, finalizer>, clusters=K edge
LearningAlgorithmStates (each holds its cluster model and edge aggregator state), cluster_examples=float32[K]
examples trained on per cluster since the last global step).

Cluster weights at the global step: examples trained since the last global step (`'examples'`), `'uniform'`, or a
user vector; in every scheme a cluster with no training since the last global step gets weight 0 (weighted
aggregators ignore it; unweighted ones, e.g. robust ones, give every cluster one vote).
"""

import collections
from typing import Sequence, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import client_work as client_work_lib
from tff_fl.algorithms import fed_avg

CLUSTER_BY = ('natural', 'labels', 'updates')
CLUSTER_WEIGHTINGS = ('examples', 'uniform')
NATURAL_SEPARATOR = '/'


# ----------------------------------------------------------------------------------------------- cluster assignment
def natural_clusters(client_ids: Sequence[str], num_clusters: int) -> np.ndarray:
  """int[n] cluster of each client from ids '<group>/<client>': groups in sorted order are clusters 0..K-1."""
  groups = [cid.split(NATURAL_SEPARATOR, 1)[0] if NATURAL_SEPARATOR in cid else None for cid in client_ids]
  if None in groups:
    raise ValueError(f"--cluster_by=natural needs client ids '<group>{NATURAL_SEPARATOR}<client>' (e.g. the "
                     f"regional_digits task); got '{client_ids[groups.index(None)]}'. Use labels or updates.")
  names = sorted(set(groups))
  if len(names) != num_clusters:
    raise ValueError(f'--num_clusters must equal the {len(names)} natural groups of this task; got {num_clusters}.')
  return np.array([names.index(g) for g in groups], np.int32)


def kmeans(features: np.ndarray, num_clusters: int, seed: int) -> np.ndarray:
  """int[n] k-means (Lloyd, k-means++ init, 10 restarts; scikit-learn) labels, renumbered by first appearance."""
  from sklearn import cluster as sk_cluster  # pylint: disable=g-import-not-at-top  (heavy; only needed here)
  features = np.asarray(features, np.float64)
  distinct = len(np.unique(features.round(12), axis=0))
  if not 1 <= num_clusters <= distinct:
    raise ValueError(f'--num_clusters must be between 1 and the {distinct} distinct client feature vectors; '
                     f'got {num_clusters}.')
  raw = sk_cluster.KMeans(num_clusters, n_init=10, random_state=seed).fit_predict(features)
  order = list(dict.fromkeys(raw.tolist()))
  return np.array([order.index(c) for c in raw], np.int32)


def label_histograms(task) -> np.ndarray:
  """float[n, num_classes]: each client's normalized training label histogram."""
  hist = np.stack([np.bincount(task.data.train[c][1], minlength=task.num_classes) for c in task.client_ids])
  return hist / hist.sum(axis=1, keepdims=True)


def update_directions(task, client_optimizer, initial_weights, *, epochs: int = 1, batch_size: int = 10,
                      seed: int = 0) -> np.ndarray:
  """float[n, d]: unit-norm flattened local update of every client after local training from `initial_weights`."""
  work = client_work_lib.build_local_training_client_work(task.model_fn, client_optimizer)
  data = [task.train_dataset(c, epochs=epochs, batch_size=batch_size, seed=seed, round_num=0)
          for c in task.client_ids]
  out = work.next(work.initialize(), [initial_weights] * len(data), data)
  flat = np.stack([np.concatenate([np.ravel(u) for u in r.update]) for r in out.result])
  return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def assign_clusters(cluster_by: str, task, num_clusters: int, seed: int, **update_kwargs) -> np.ndarray:
  """int[n] cluster of each client of `task` (canonical client order). `update_kwargs` go to `update_directions`
  (client_optimizer, initial_weights, epochs, batch_size) for cluster_by='updates'; `seed` seeds k-means and the
  local training data order."""
  if cluster_by not in CLUSTER_BY:
    raise ValueError(f"--cluster_by must be one of {', '.join(CLUSTER_BY)}; got '{cluster_by}'.")
  if num_clusters < 1 or num_clusters > len(task.client_ids):
    raise ValueError(f'--num_clusters must be between 1 and the number of clients ({len(task.client_ids)}); '
                     f'got {num_clusters}.')
  if cluster_by == 'natural':
    return natural_clusters(task.client_ids, num_clusters)
  if cluster_by == 'labels':
    return kmeans(label_histograms(task), num_clusters, seed)
  return kmeans(update_directions(task, seed=seed, **update_kwargs), num_clusters, seed)


# ------------------------------------------------------------------------------------------------------ global level
def build_global_step(weights_type, aggregator_factory=None, server_optimizer=None, mixing: float = 0.0):
  """(init, next) computations of the edge -> global step.

  next(state@SERVER, global ModelWeights@SERVER, cluster ModelWeights@CLIENTS, cluster weight float32@CLIENTS)
    -> (state@SERVER, new global@SERVER, mixed cluster models@CLIENTS, measurements@SERVER).
  """
  aggregator = fed_avg.build_model_aggregator(aggregator_factory, weights_type.trainable)
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0), weights_type)
  mixing = float(mixing)

  @tff.federated_computation
  def init_fn():
    return tff.federated_zip(collections.OrderedDict(aggregator=aggregator.initialize(),
                                                     finalizer=finalizer.initialize()))

  @tff.tensorflow.computation(weights_type, weights_type)
  def cluster_delta(global_weights, cluster_weights):
    return tf.nest.map_structure(tf.subtract, global_weights.trainable, cluster_weights.trainable)

  @tff.tensorflow.computation(weights_type, weights_type)
  def mix(global_weights, cluster_weights):
    trainable = tf.nest.map_structure(lambda g, c: (1.0 - mixing) * g + mixing * c,
                                      global_weights.trainable, cluster_weights.trainable)
    return tff.learning.models.ModelWeights(trainable, global_weights.non_trainable)

  @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(weights_type, tff.CLIENTS),
                             tff.FederatedType(np.float32, tff.CLIENTS))
  def next_fn(state, global_weights, cluster_models, cluster_weights):
    deltas = tff.federated_map(cluster_delta, (tff.federated_broadcast(global_weights), cluster_models))
    agg = aggregator.next(state.aggregator, deltas, cluster_weights)
    fin = finalizer.next(state.finalizer, global_weights, agg.result)
    mixed = tff.federated_map(mix, (tff.federated_broadcast(fin.result), cluster_models))
    new_state = tff.federated_zip(collections.OrderedDict(aggregator=agg.state, finalizer=fin.state))
    measurements = tff.federated_zip(collections.OrderedDict(aggregator=agg.measurements,
                                                             finalizer=fin.measurements))
    return new_state, fin.result, mixed, measurements

  return init_fn, next_fn


def payload_bytes(type_spec) -> int:
  """Bytes of an uncompressed value of TFF type `type_spec` (sum over tensors of elements x dtype size)."""
  specs = tf.nest.flatten(tff.types.type_to_tf_tensor_specs(type_spec))
  return int(sum(np.prod(s.shape.as_list(), dtype=np.int64) * s.dtype.size for s in specs))


# -------------------------------------------------------------------------------------------------------- process
class HierarchicalProcess:
  """Client -> edge -> global training; `next(state, cluster_inputs)` takes K lists of client datasets."""

  def __init__(self, model_fn: client_work_lib.ModelFn, client_optimizer, num_clusters: int, *,
               global_every: int = 1, cluster_mixing: float = 0.0,
               cluster_weighting: Union[str, Sequence[float]] = 'examples',
               global_optimizer=None, edge_optimizer=None, edge_aggregator=None, global_aggregator=None,
               client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES):
    if num_clusters < 1:
      raise ValueError(f'--num_clusters must be >= 1; got {num_clusters}.')
    if global_every < 1:
      raise ValueError(f'--global_every must be >= 1; got {global_every}.')
    if not 0.0 <= cluster_mixing < 1.0:
      raise ValueError(f'--cluster_mixing must be in [0, 1); got {cluster_mixing}.')
    self.num_clusters, self.global_every, self.cluster_mixing = num_clusters, global_every, float(cluster_mixing)
    self.cluster_weighting = parse_cluster_weighting(cluster_weighting, num_clusters)
    self.edge_process = fed_avg.build_fed_avg(
        model_fn, client_optimizer, edge_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0),
        client_weighting=client_weighting, model_aggregator=edge_aggregator)
    weights_type = self.edge_process.get_model_weights.type_signature.result
    self.global_init, self.global_step = build_global_step(weights_type, global_aggregator, global_optimizer,
                                                           cluster_mixing)
    self.update_bytes = payload_bytes(weights_type.trainable)
    self.model_bytes = payload_bytes(weights_type)

  def initialize(self) -> collections.OrderedDict:
    edge = self.edge_process.initialize()
    return collections.OrderedDict(
        round=np.int32(0), global_model=self.edge_process.get_model_weights(edge), global_state=self.global_init(),
        clusters=tuple(edge for _ in range(self.num_clusters)),
        cluster_examples=np.zeros(self.num_clusters, np.float32))

  def get_model_weights(self, state) -> tff.learning.models.ModelWeights:
    return state['global_model']

  def cluster_model_weights(self, state) -> list:
    return [self.edge_process.get_model_weights(s) for s in state['clusters']]

  def set_model_weights(self, state, weights) -> collections.OrderedDict:
    """Sets the global model and every cluster model to `weights`."""
    state = collections.OrderedDict(state)
    state['global_model'] = weights
    state['clusters'] = tuple(self.edge_process.set_model_weights(s, weights) for s in state['clusters'])
    return state

  def cluster_weights(self, cluster_examples: np.ndarray) -> np.ndarray:
    active = (np.asarray(cluster_examples) > 0).astype(np.float32)
    if isinstance(self.cluster_weighting, np.ndarray):
      return active * self.cluster_weighting
    return np.asarray(cluster_examples, np.float32) if self.cluster_weighting == 'examples' else active

  def next(self, state, cluster_inputs: Sequence[Sequence[tf.data.Dataset]]):
    """One round: edge FedAvg in every cluster with clients; the global step when round % global_every == 0."""
    if len(cluster_inputs) != self.num_clusters:
      raise ValueError(f'HierarchicalProcess.next needs one list of client datasets per cluster '
                       f'({self.num_clusters}); got {len(cluster_inputs)}.')
    round_num = int(state['round']) + 1
    clusters, examples = list(state['clusters']), np.array(state['cluster_examples'], np.float32)
    per_cluster, train = collections.OrderedDict(), []
    for k, data in enumerate(cluster_inputs):
      row = collections.OrderedDict(clients=len(data))
      if data:
        out = self.edge_process.next(clusters[k], list(data))
        clusters[k] = out.state
        metrics = out.metrics['client_work']['train']
        examples[k] += float(metrics['num_examples'])
        train.append(metrics)
        row.update(train_loss=float(metrics['loss']), train_examples=int(metrics['num_examples']))
      per_cluster[str(k)] = row
    new_state = collections.OrderedDict(state, round=np.int32(round_num), clusters=tuple(clusters),
                                        cluster_examples=examples)
    clients = sum(len(d) for d in cluster_inputs)
    comm = collections.OrderedDict(
        client_edge=collections.OrderedDict(bytes_up=clients * self.update_bytes,
                                            bytes_down=clients * self.model_bytes),
        edge_global=collections.OrderedDict(bytes_up=0, bytes_down=0))
    metrics = collections.OrderedDict(
        client_work=collections.OrderedDict(train=combine_train_metrics(train)),
        hierarchy=collections.OrderedDict(global_step=0, active_clusters=int(np.sum(examples > 0))),
        comm=comm, cluster=per_cluster)
    if round_num % self.global_every == 0:
      new_state, global_metrics = self._global_step(new_state)
      metrics['hierarchy']['global_step'] = 1
      metrics['global_aggregation'] = global_metrics
      comm['edge_global'] = collections.OrderedDict(bytes_up=self.num_clusters * self.update_bytes,
                                                    bytes_down=self.num_clusters * self.model_bytes)
    return tff.learning.templates.LearningProcessOutput(new_state, metrics)

  def _global_step(self, state):
    weights = self.cluster_weights(state['cluster_examples'])
    global_state, global_model, mixed, measurements = self.global_step(
        state['global_state'], state['global_model'], self.cluster_model_weights(state), list(weights))
    clusters = tuple(self.edge_process.set_model_weights(s, w) for s, w in zip(state['clusters'], mixed))
    new_state = collections.OrderedDict(state, global_model=global_model, global_state=global_state,
                                        clusters=clusters, cluster_examples=np.zeros(self.num_clusters, np.float32))
    return new_state, measurements


def parse_cluster_weighting(value: Union[str, Sequence[float]], num_clusters: int):
  """'examples' | 'uniform' | K non-negative numbers (a sequence or a comma-separated string) -> str or float32[K]."""
  if isinstance(value, str) and value in CLUSTER_WEIGHTINGS:
    return value
  try:
    weights = np.array([float(v) for v in (value.split(',') if isinstance(value, str) else value)], np.float32)
  except ValueError:
    weights = np.array([], np.float32)
  if weights.shape != (num_clusters,) or not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
    raise ValueError(f"--cluster_weighting must be 'examples', 'uniform' or {num_clusters} comma-separated "
                     f"non-negative numbers (one per cluster, not all 0); got '{value}'.")
  return weights


def combine_train_metrics(metrics: Sequence[dict]) -> collections.OrderedDict:
  """Example-weighted mean of per-cluster loss/accuracy and sums of counts (zeros when no cluster trained)."""
  n = np.array([float(m['num_examples']) for m in metrics], np.float64)
  out = collections.OrderedDict()
  for key in ('sparse_categorical_accuracy', 'loss'):
    values = np.array([float(m.get(key, 0.0)) for m in metrics], np.float64)
    out[key] = float(np.sum(n * values) / n.sum()) if n.sum() > 0 else 0.0
  out['num_examples'] = int(n.sum())
  out['num_batches'] = int(sum(int(m.get('num_batches', 0)) for m in metrics))
  return out


def group_by_cluster(client_ids: Sequence[str], cluster_of: dict, num_clusters: int) -> list[list[str]]:
  """Splits a cohort into K lists (cohort order kept within each cluster)."""
  groups = [[] for _ in range(num_clusters)]
  for cid in client_ids:
    groups[int(cluster_of[cid])].append(cid)
  return groups


def build_cluster_eval(model_fn: client_work_lib.ModelFn) -> tff.Computation:
  """(ModelWeights@CLIENTS, dataset@CLIENTS) -> per-client eval sums@CLIENTS: each client evaluates its own model
  (its cluster's), in one call; sums as in `tff_fl.simulation.evaluation.build_client_eval_fn`."""
  from tff_fl.simulation import evaluation  # pylint: disable=g-import-not-at-top  (simulation depends on algorithms)
  weights_type, data_type, _ = client_work_lib.model_types(model_fn)

  @tff.tensorflow.computation(weights_type, data_type)
  def client_eval(weights, dataset):
    return evaluation.build_client_eval_fn(model_fn())(weights, dataset)

  @tff.federated_computation(tff.FederatedType(weights_type, tff.CLIENTS), tff.FederatedType(data_type, tff.CLIENTS))
  def per_client_eval(weights, datasets):
    return tff.federated_map(client_eval, (weights, datasets))

  return per_client_eval


def cluster_accuracy(results: Sequence[dict], clusters: Sequence[int], num_clusters: int) -> np.ndarray:
  """float[K]: example-weighted accuracy of each cluster from per-client eval sums (NaN for a cluster without
  evaluation data)."""
  correct, count = np.zeros(num_clusters), np.zeros(num_clusters)
  for r, k in zip(results, clusters):
    correct[k] += float(r['correct'])
    count[k] += float(r['num_predictions'])
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(count > 0, correct / count, np.nan)
