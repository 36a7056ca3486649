"""Magnitude pruning of the global model across rounds, driven by `tfmot.sparsity.keras` schedules.

The server keeps one 0/1 mask per trainable weight (all ones for weights tfmot does not prune, e.g. biases). Round t:

  broadcast masked weights and masks ► clients train under the masks (every optimizer step is followed by
  w <- w * mask, so pruned weights stay exactly 0 and their delta is exactly 0) ► aggregate (any tff.aggregators
  factory) ► the aggregate is multiplied by the masks ► server optimizer ► weights * masks ► if
  `schedule(t)` says prune, new masks = tfmot's magnitude rule at sparsity `schedule(t)[1]` ► weights * masks.

The magnitude rule is tfmot's `Pruning._update_mask`: keep the k = max(round(n * (1 - s)), 1) largest |w| (ties at
the k-th value kept). Prunable weights are exactly those `prune_low_magnitude` wraps. The schedule's step is the
round number (1-based), so `pruning_begin_round=b` first prunes at the end of round b.

Metrics per round: `sparsity` (fraction of prunable weights masked), `pruning/target_sparsity`, `pruning/pruned`
(1 if masks were recomputed), `pruning/<layer weight>` per prunable weight, `pruning/all_weights` (zeros among all
trainable weights). `export_pruned_model` writes the final model as a Keras SavedModel via `strip_pruning`.
"""

import collections
import gzip
import io
import os
import tarfile
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_model_optimization as tfmot

from tff_fl.algorithms import client_work as client_work_lib
from tff_fl.algorithms import fed_avg

SCHEDULES = ('none', 'constant', 'polynomial')
KerasFn = Callable[[], tf.keras.Model]


def build_schedule(name: str, *, initial_sparsity: float = 0.0, final_sparsity: float = 0.5, begin_round: int = 1,
                   end_round: int = -1, frequency: int = 1) -> Optional[tfmot.sparsity.keras.PruningSchedule]:
  """tfmot schedule over rounds; None for 'none'. ValueError (naming the flag) on bad values."""
  if name not in SCHEDULES:
    raise ValueError(f"--pruning_schedule must be one of {', '.join(SCHEDULES)}; got '{name}'.")
  if name == 'none':
    return None
  for flag, value in (('initial_sparsity', initial_sparsity), ('final_sparsity', final_sparsity)):
    if not 0.0 <= value < 1.0:
      raise ValueError(f'--{flag} must be in [0, 1); got {value}.')
  if begin_round < 0:
    raise ValueError(f'--pruning_begin_round must be >= 0; got {begin_round}.')
  if frequency < 1:
    raise ValueError(f'--pruning_frequency must be >= 1; got {frequency}.')
  if name == 'constant':
    if end_round != -1 and end_round < begin_round:
      raise ValueError(f'--pruning_end_round must be -1 (never stop) or >= --pruning_begin_round ({begin_round}); '
                       f'got {end_round}.')
    return tfmot.sparsity.keras.ConstantSparsity(final_sparsity, begin_round, end_round, frequency)
  if end_round <= begin_round:
    raise ValueError(f'--pruning_end_round must be > --pruning_begin_round ({begin_round}) for the polynomial '
                     f'schedule; got {end_round}.')
  return tfmot.sparsity.keras.PolynomialDecay(initial_sparsity, final_sparsity, begin_round, end_round,
                                              frequency=frequency)


def prunable_weights(keras_fn: KerasFn) -> list[Optional[str]]:
  """Per trainable weight (model order): a stable name `layer<i>_<class>_<weight>` if `prune_low_magnitude` prunes
  it, else None (i = index in `model.layers`, independent of Keras' global layer-name counter)."""
  model = keras_fn()
  names = {w.ref(): f"layer{i}_{type(layer).__name__.lower()}_{w.name.split('/')[-1].split(':')[0]}"
           for i, layer in enumerate(model.layers) for w in layer.trainable_weights}
  wrapped = tfmot.sparsity.keras.prune_low_magnitude(model)
  pruned = {w.ref() for layer in wrapped.layers if hasattr(layer, 'pruning_vars') for w, _, _ in layer.pruning_vars}
  return [names[w.ref()] if w.ref() in pruned else None for w in model.trainable_weights]


def magnitude_mask(weight: tf.Tensor, sparsity: tf.Tensor) -> tf.Tensor:
  """tfmot's magnitude rule: 1 for the k = max(round(n (1 - s)), 1) largest |w| (ties with the k-th kept), else 0."""
  abs_w = tf.reshape(tf.abs(weight), [-1])
  n = tf.size(abs_w)
  k = tf.cast(tf.maximum(tf.round(tf.cast(n, tf.float32) * (1.0 - sparsity)), 1.0), tf.int32)
  values, indices = tf.math.top_k(abs_w, k=n)
  keep = tf.logical_or(abs_w >= values[k - 1], tf.one_hot(indices[k - 1], n, on_value=True, off_value=False))
  return tf.reshape(tf.cast(keep, weight.dtype), tf.shape(weight))


class MaskedOptimizer(tff.learning.optimizers.Optimizer):
  """Applies `inner`, then multiplies the new weights by `masks` (flat list, same order as the weights)."""

  def __init__(self, inner: tff.learning.optimizers.Optimizer, masks):
    self._inner, self._masks = inner, list(masks)

  def initialize(self, specs):
    return self._inner.initialize(specs)

  def next(self, state, weights, gradients):
    state, updated = self._inner.next(state, weights, gradients)
    return state, tuple(w * m for w, m in zip(tf.nest.flatten(updated), self._masks))


def build_pruned_fed_avg(model_fn: client_work_lib.ModelFn, keras_fn: KerasFn,
                         client_optimizer: tff.learning.optimizers.Optimizer,
                         server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *,
                         schedule: tfmot.sparsity.keras.PruningSchedule,
                         client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES, proximal_mu: float = 0.0,
                         model_aggregator=None, metrics_aggregator=None) -> tff.learning.templates.LearningProcess:
  """FedAvg/FedProx/FedOpt with server-side magnitude pruning (see module docstring). State: OrderedDict(
  global_model_weights, masks (list like the trainable weights), round_num int64, aggregator, finalizer)."""
  names = prunable_weights(keras_fn)
  initial_fn = fed_avg.initial_weights_computation(model_fn)
  weights_type = initial_fn.type_signature.result
  masks_type = weights_type.trainable
  _, data_type, finalizers = client_work_lib.model_types(model_fn)
  server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
  aggregator = fed_avg.build_model_aggregator(model_aggregator, masks_type)
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type)
  with tf.Graph().as_default():
    metrics_fn = (metrics_aggregator or tff.learning.metrics.sum_then_finalize)(finalizers)

  @tff.tensorflow.computation(weights_type, masks_type, data_type)
  def client_update(weights, masks, dataset):
    local_train = client_work_lib.build_local_training_fn(model_fn(), weighting=client_weighting,
                                                          proximal_mu=float(proximal_mu))
    return local_train(MaskedOptimizer(client_optimizer, tf.nest.flatten(masks)), weights, dataset)

  @tff.tensorflow.computation(masks_type, masks_type)
  def mask_update(update, masks):
    return tf.nest.map_structure(tf.multiply, update, masks)

  @tff.tensorflow.computation(weights_type, masks_type, tf.int64)
  def prune(weights, masks, round_num):
    should_prune, target = schedule(round_num)
    trainable = [w * m for w, m in zip(weights.trainable, masks)]
    new_masks = [m if name is None else tf.cond(should_prune, lambda w=w: magnitude_mask(w, target), lambda m=m: m)
                 for name, w, m in zip(names, trainable, masks)]
    trainable = [w * m for w, m in zip(trainable, new_masks)]
    pruned = [m for name, m in zip(names, new_masks) if name is not None]
    kept = tf.add_n([tf.reduce_sum(m) for m in pruned])
    total = float(sum(int(np.prod(m.shape)) for m in pruned))
    zeros = tf.add_n([tf.reduce_sum(tf.cast(tf.equal(w, 0.0), tf.float32)) for w in trainable])
    metrics = collections.OrderedDict(target_sparsity=target, pruned=tf.cast(should_prune, tf.int32),
                                      all_weights=zeros / float(sum(int(np.prod(w.shape)) for w in trainable)))
    metrics.update((n, 1.0 - tf.reduce_mean(m)) for n, m in zip([n for n in names if n], pruned))
    weights = tff.learning.models.ModelWeights(trainable=trainable, non_trainable=weights.non_trainable)
    return weights, new_masks, 1.0 - kept / total, metrics

  @tff.tensorflow.computation()
  def initial_masks():
    return [tf.ones(t.shape, t.dtype) for t in masks_type]

  @tff.federated_computation()
  def init_fn():
    return tff.federated_zip(collections.OrderedDict(
        global_model_weights=tff.federated_eval(initial_fn, tff.SERVER),
        masks=tff.federated_eval(initial_masks, tff.SERVER),
        round_num=tff.federated_value(np.int64(0), tff.SERVER),
        aggregator=aggregator.initialize(), finalizer=finalizer.initialize()))

  state_type = init_fn.type_signature.result

  @tff.federated_computation(state_type, tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, client_data):
    results, model_outputs = tff.federated_map(client_update, (
        tff.federated_broadcast(state.global_model_weights), tff.federated_broadcast(state.masks), client_data))
    agg = aggregator.next(state.aggregator, results.update, results.update_weight)
    fin = finalizer.next(state.finalizer, state.global_model_weights,
                         tff.federated_map(mask_update, (agg.result, state.masks)))
    round_num = tff.federated_map(tff.tensorflow.computation(lambda r: r + 1, tf.int64), state.round_num)
    weights, masks, sparsity, pruning = tff.federated_map(prune, (fin.result, state.masks, round_num))
    new_state = tff.federated_zip(collections.OrderedDict(
        global_model_weights=weights, masks=masks, round_num=round_num, aggregator=agg.state, finalizer=fin.state))
    metrics = tff.federated_zip(collections.OrderedDict(
        distributor=tff.federated_value((), tff.SERVER),
        client_work=tff.federated_zip(collections.OrderedDict(train=metrics_fn(model_outputs))),
        aggregator=agg.measurements, finalizer=fin.measurements, sparsity=sparsity, pruning=pruning))
    return tff.learning.templates.LearningProcessOutput(new_state, metrics)

  @tff.tensorflow.computation(state_type.member)
  def get_model_weights(state):
    return state['global_model_weights']

  @tff.tensorflow.computation(state_type.member, weights_type)
  def set_model_weights(state, weights):
    masked = tff.learning.models.ModelWeights(
        trainable=[w * m for w, m in zip(weights.trainable, state['masks'])], non_trainable=weights.non_trainable)
    return collections.OrderedDict(global_model_weights=masked, masks=state['masks'], round_num=state['round_num'],
                                   aggregator=state['aggregator'], finalizer=state['finalizer'])

  return tff.learning.templates.LearningProcess(init_fn, next_fn, get_model_weights, set_model_weights)


def _dir_bytes(path: str) -> tuple[int, int]:
  """(total bytes of the files under `path`, bytes of a gzip-compressed tar of it)."""
  total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode='w:gz') as tar:
    tar.add(path, arcname='.')
  return total, len(buf.getvalue())


def export_pruned_model(keras_fn: KerasFn, weights: tff.learning.models.ModelWeights, masks,
                        export_dir: str) -> collections.OrderedDict:
  """Writes the model to `export_dir` as a Keras SavedModel stripped of pruning wrappers; returns its sizes.

  The weights go into `prune_low_magnitude` wrappers whose masks are set to `masks` and applied with tfmot's
  `weight_mask_op`; `strip_pruning` then gives the plain Keras model that is saved. Reports the measured sparsity
  of the exported prunable weights, and the export's size raw (dense storage) and gzip-compressed.
  """
  model = keras_fn()
  for var, value in zip(model.trainable_weights, weights.trainable):
    var.assign(value)
  for var, value in zip(model.non_trainable_weights, weights.non_trainable):
    var.assign(value)
  mask_by_weight = {v.ref(): np.asarray(m) for v, m in zip(model.trainable_weights, masks)}
  wrapped = tfmot.sparsity.keras.prune_low_magnitude(model)
  for layer in wrapped.layers:
    if hasattr(layer, 'pruning_obj'):  # A PruneLowMagnitude wrapper.
      for weight, mask, _ in layer.pruning_vars:
        mask.assign(mask_by_weight[weight.ref()])
      layer.pruning_obj.weight_mask_op()
  stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
  stripped.save(export_dir, save_format='tf', include_optimizer=False)
  prunable = [w.numpy() for w, name in zip(stripped.trainable_weights, prunable_weights(keras_fn)) if name]
  data = b''.join(w.numpy().astype(np.float32).tobytes() for w in stripped.weights)
  raw, compressed = _dir_bytes(export_dir)
  return collections.OrderedDict(
      export_dir=export_dir,
      measured_sparsity=float(sum(np.sum(w == 0) for w in prunable) / sum(w.size for w in prunable)),
      export_bytes=raw, export_gzip_bytes=compressed,
      weights_bytes=len(data), weights_gzip_bytes=len(gzip.compress(data)))
