"""Hierarchical FL, algorithm level: cluster assignment, cluster weighting and the global step (HierFAVG, Liu et al.
2020, with cluster mixing). The process that runs it on the engine is `tff_fl.engine.hierarchical`.

  client -> edge server of its cluster (any algorithm's engine round, every round)
         -> global server (`GlobalStep`, every `global_every` rounds)

Global step, with g the global model and c_k the model of cluster k (trainable weights):
  delta_k = g - c_k                                       (the edges' upload: float32, structure of the trainable)
  d = aggregator(delta_k, weight_k)                        (any `tff.aggregators` factory; clusters are its CLIENTS)
  g' = global optimizer step of g along d                  (TFF's apply-optimizer finalizer)
  c_k' = mixing * c_k + (1 - mixing) * g'                  (mixing = 0: every cluster restarts from g', HierFAVG)
`weight_k` (`cluster_weights`): examples trained in cluster k since the last global step ('examples'), 1
('uniform') or a user vector; 0 for a cluster that did not train since the last global step in every scheme
(weighted aggregators ignore it; unweighted ones, e.g. robust ones, give every cluster one vote).

Errors name the Python arguments (`num_clusters`, `cluster_by`, ...); the binary's component maps them to flags.
"""

import collections
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import local_training
from tff_fl.algorithms import model_types

CLUSTER_BY = ('natural', 'labels', 'updates')
CLUSTER_WEIGHTINGS = ('examples', 'uniform')
NATURAL_SEPARATOR = '/'


# ----------------------------------------------------------------------------------------------- cluster assignment
def natural_clusters(client_ids: Sequence[str], num_clusters: int) -> np.ndarray:
  """int[n] cluster of each client from ids '<group>/<client>': groups in sorted order are clusters 0..K-1."""
  groups = [cid.split(NATURAL_SEPARATOR, 1)[0] if NATURAL_SEPARATOR in cid else None for cid in client_ids]
  if None in groups:
    raise ValueError(f"cluster_by=natural needs client ids '<group>{NATURAL_SEPARATOR}<client>' (e.g. the "
                     f"regional_digits task); got '{client_ids[groups.index(None)]}'. Use labels or updates.")
  names = sorted(set(groups))
  if len(names) != num_clusters:
    raise ValueError(f'num_clusters must equal the {len(names)} natural groups of this task; got {num_clusters}.')
  return np.array([names.index(g) for g in groups], np.int32)


def kmeans(features: np.ndarray, num_clusters: int, seed: int) -> np.ndarray:
  """int[n] k-means (Lloyd, k-means++ init, 10 restarts; scikit-learn) labels, renumbered by first appearance."""
  from sklearn import cluster as sk_cluster  # pylint: disable=g-import-not-at-top  (heavy; only needed here)
  features = np.asarray(features, np.float64)
  distinct = len(np.unique(features.round(12), axis=0))
  if not 1 <= num_clusters <= distinct:
    raise ValueError(f'num_clusters must be between 1 and the {distinct} distinct client feature vectors; '
                     f'got {num_clusters}.')
  raw = sk_cluster.KMeans(num_clusters, n_init=10, random_state=seed).fit_predict(features)
  order = list(dict.fromkeys(raw.tolist()))
  return np.array([order.index(c) for c in raw], np.int32)


def label_histograms(task) -> np.ndarray:
  """float[n, num_classes]: each client's normalized training label histogram."""
  hist = np.stack([np.bincount(task.data.train[c][1], minlength=task.num_classes) for c in task.client_ids])
  return hist / hist.sum(axis=1, keepdims=True)


def build_local_updates(model_fn: model_types.ModelFn,
                        client_optimizer: tff.learning.optimizers.Optimizer) -> tff.Computation:
  """(ModelWeights@SERVER, datasets@CLIENTS) -> update@CLIENTS: `local_training.train` from the broadcast weights
  on each client's dataset (update = initial - final trainable weights, zeroed if not finite)."""
  weights_type, data_type, _ = model_types.model_types(model_fn)

  @tff.tensorflow.computation(weights_type, data_type)
  def local_update(weights, dataset):
    model = model_fn()
    return tf.function(lambda: local_training.train(model, client_optimizer, weights, dataset)['update'],
                       autograph=False)()

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER), tff.FederatedType(data_type, tff.CLIENTS))
  def local_updates(weights, datasets):
    return tff.federated_map(local_update, (tff.federated_broadcast(weights), datasets))

  return local_updates


def update_directions(task, client_optimizer, initial_weights, *, epochs: int = 1, batch_size: int = 10,
                      seed: int = 0) -> np.ndarray:
  """float[n, d]: unit-norm flattened local update of every client after local training from `initial_weights`
  (the data order of `task.train_dataset(..., round_num=0)`)."""
  data = [task.train_dataset(c, epochs=epochs, batch_size=batch_size, seed=seed, round_num=0)
          for c in task.client_ids]
  updates = build_local_updates(task.model_fn, client_optimizer)(initial_weights, data)
  flat = np.stack([np.concatenate([np.ravel(u) for u in update]) for update in updates])
  return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def assign_clusters(cluster_by: str, task, num_clusters: int, seed: int, **update_kwargs) -> np.ndarray:
  """int[n] cluster of each client of `task` (canonical client order). `update_kwargs` go to `update_directions`
  (client_optimizer, initial_weights, epochs, batch_size) for cluster_by='updates'; `seed` seeds k-means and the
  local training data order."""
  if cluster_by not in CLUSTER_BY:
    raise ValueError(f"cluster_by must be one of {', '.join(CLUSTER_BY)}; got '{cluster_by}'.")
  if num_clusters < 1 or num_clusters > len(task.client_ids):
    raise ValueError(f'num_clusters must be between 1 and the number of clients ({len(task.client_ids)}); '
                     f'got {num_clusters}.')
  if cluster_by == 'natural':
    return natural_clusters(task.client_ids, num_clusters)
  if cluster_by == 'labels':
    return kmeans(label_histograms(task), num_clusters, seed)
  return kmeans(update_directions(task, seed=seed, **update_kwargs), num_clusters, seed)


def fewest_cluster_clients(cluster_sizes: Sequence[int], cohort_size: int) -> int:
  """The fewest clients of any cluster that a cohort of `cohort_size` clients drawn from the whole population
  (sum of `cluster_sizes`) can contain: min_k max(0, cohort_size - (population - size_k))."""
  population = int(np.sum(cluster_sizes))
  return int(min(max(0, cohort_size - (population - int(s))) for s in cluster_sizes))


# ------------------------------------------------------------------------------------------------- cluster weights
def parse_cluster_weighting(value: Union[str, Sequence[float]], num_clusters: int):
  """'examples' | 'uniform' | K non-negative numbers (a sequence or a comma-separated string) -> str or float32[K]."""
  if isinstance(value, str) and value in CLUSTER_WEIGHTINGS:
    return value
  try:
    weights = np.array([float(v) for v in (value.split(',') if isinstance(value, str) else value)], np.float32)
  except ValueError:
    weights = np.array([], np.float32)
  if weights.shape != (num_clusters,) or not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
    raise ValueError(f"cluster_weighting must be 'examples', 'uniform' or {num_clusters} comma-separated "
                     f"non-negative numbers (one per cluster, not all 0); got '{value}'.")
  return weights


def cluster_weights(weighting, cluster_examples: np.ndarray) -> np.ndarray:
  """float32[K] weights of the global step (module docstring); `weighting` from `parse_cluster_weighting`."""
  examples = np.asarray(cluster_examples, np.float32)
  active = (examples > 0).astype(np.float32)
  if isinstance(weighting, np.ndarray):
    return active * weighting
  return examples if weighting == 'examples' else active


# ---------------------------------------------------------------------------------------------------- global step
class GlobalStep:
  """The global step over K cluster models (module docstring); numpy in, numpy out.

  `initialize()` -> OrderedDict(aggregator=, finalizer=) state; `next(state, global_weights, cluster_weights_list,
  weights float32[K], mixing)` -> (state, new global ModelWeights, K mixed cluster ModelWeights, measurements).
  The federated part is one small computation: the aggregator's `next` with the clusters as CLIENTS, then the
  finalizer at SERVER.
  """

  def __init__(self, weights_type, aggregator_factory: Optional[model_types.AnyFactory] = None,
               server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None):
    aggregator = model_types.build_model_aggregator(aggregator_factory, weights_type.trainable)
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
        server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0), weights_type)

    @tff.federated_computation
    def init_fn():
      return tff.federated_zip(collections.OrderedDict(aggregator=aggregator.initialize(),
                                                       finalizer=finalizer.initialize()))

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(weights_type, tff.SERVER),
                               tff.FederatedType(weights_type.trainable, tff.CLIENTS),
                               tff.FederatedType(np.float32, tff.CLIENTS))
    def next_fn(state, global_weights, cluster_deltas, weights):
      agg = aggregator.next(state.aggregator, cluster_deltas, weights)
      fin = finalizer.next(state.finalizer, global_weights, agg.result)
      new_state = tff.federated_zip(collections.OrderedDict(aggregator=agg.state, finalizer=fin.state))
      measurements = tff.federated_zip(collections.OrderedDict(aggregator=agg.measurements,
                                                               finalizer=fin.measurements))
      return new_state, fin.result, measurements

    self.initialize, self._next = init_fn, next_fn

  def next(self, state, global_weights, cluster_models: Sequence, weights: np.ndarray, mixing: float):
    deltas = [[np.asarray(g, np.float32) - np.asarray(c, np.float32)
               for g, c in zip(global_weights.trainable, m.trainable)] for m in cluster_models]
    state, new_global, measurements = self._next(state, global_weights, deltas,
                                                 [np.float32(w) for w in weights])
    mixed = [tff.learning.models.ModelWeights(
        trainable=[((1.0 - mixing) * np.asarray(g) + mixing * np.asarray(c)).astype(np.asarray(g).dtype)
                   for g, c in zip(new_global.trainable, m.trainable)],
        non_trainable=list(new_global.non_trainable)) for m in cluster_models]
    return state, new_global, mixed, measurements


def payload_bytes(type_spec) -> int:
  """Bytes of an uncompressed value of TFF type `type_spec` (sum over tensors of elements x dtype size)."""
  specs = tf.nest.flatten(tff.types.type_to_tf_tensor_specs(type_spec))
  return int(sum(np.prod(s.shape.as_list(), dtype=np.int64) * s.dtype.size for s in specs))


# ---------------------------------------------------------------------------------------------------- metrics
_SUMMED_METRICS = ('num_examples', 'num_batches')


def combine_train_metrics(metrics: Sequence[Mapping]) -> collections.OrderedDict:
  """Per-cluster `client_work/train` metrics -> one: counts (num_examples, num_batches) summed, every other metric
  (loss, accuracy, ...) the example-weighted mean (0 when no cluster trained)."""
  n = np.array([float(m['num_examples']) for m in metrics], np.float64)
  keys = list(dict.fromkeys(k for m in metrics for k in m)) or ['loss', 'num_examples']
  out = collections.OrderedDict()
  for key in keys:
    values = np.array([float(m.get(key, 0.0)) for m in metrics], np.float64)
    if key in _SUMMED_METRICS:
      out[key] = int(values.sum())
    else:
      out[key] = float(np.sum(n * values) / n.sum()) if n.sum() > 0 else 0.0
  return out


def cluster_accuracy(results: Sequence[Mapping], clusters: Sequence[int], num_clusters: int) -> np.ndarray:
  """float[K]: example-weighted accuracy of each cluster from per-client eval sums (NaN for a cluster without
  evaluation data)."""
  correct, count = np.zeros(num_clusters), np.zeros(num_clusters)
  for r, k in zip(results, clusters):
    correct[k] += float(r['correct'])
    count[k] += float(r['num_predictions'])
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(count > 0, correct / count, np.nan)
