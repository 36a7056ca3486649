"""Magnitude pruning of the global model across rounds, driven by `tfmot.sparsity.keras` schedules, as an
`Extension` that composes with every algorithm on the engine (FedAvg, FedProx, FedSGD, FedNova, SCAFFOLD, ...).

The server keeps one 0/1 mask per trainable weight (all ones for weights tfmot does not prune, e.g. biases). Round t:

  broadcast masked weights and masks ► clients train under the masks (local training multiplies the weights by the
  masks after every optimizer step, so pruned weights stay exactly 0 and their delta is exactly 0) ► aggregate (any
  tff.aggregators factory) ► the aggregate is multiplied by the masks ► server optimizer ► weights * masks ► if
  `schedule(t)` says prune, new masks = tfmot's magnitude rule at sparsity `schedule(t)[1]` ► weights * masks.

The magnitude rule is tfmot's `Pruning._update_mask`: keep the k = max(round(n * (1 - s)), 1) largest |w| (ties at
the k-th value kept). Prunable weights are exactly those `prune_low_magnitude` wraps. The schedule's step is the
round number (1-based), so `pruning_begin_round=b` first prunes at the end of round b.

Engine state: `state['extensions']['pruning']` = OrderedDict(masks, round_num) (`masks_of(state)`). Metrics per
round under `pruning/`: `sparsity` (fraction of prunable weights masked), `target_sparsity`, `pruned` (1 if masks
were recomputed), `<layer weight>` per prunable weight, `all_weights` (zeros among all trainable weights).
`export_pruned_model` writes the final model as a Keras SavedModel via `strip_pruning`.
"""
import collections
import collections.abc
import gzip
import io
import os
import tarfile
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_model_optimization as tfmot

from tff_fl.algorithms import extension
from tff_fl.algorithms import local_training

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


class Pruning(extension.Extension):
  """Server-side magnitude pruning on any algorithm's round (module docstring). `keras_fn` builds the task's Keras
  model (it names the prunable weights); `schedule` a tfmot `PruningSchedule` over rounds (`build_schedule`).

  Server state OrderedDict(masks=[0/1 like each trainable weight], round_num=int64 rounds completed); broadcast: the
  masks; local options: the masks; aggregate and the server's new weights are multiplied by the masks.
  """

  name = 'pruning'

  def __init__(self, keras_fn: KerasFn, schedule: tfmot.sparsity.keras.PruningSchedule):
    if not isinstance(schedule, tfmot.sparsity.keras.PruningSchedule):
      raise ValueError(f'schedule must be a tfmot.sparsity.keras.PruningSchedule; got {schedule!r}.')
    self.names = prunable_weights(keras_fn)
    if not any(self.names):
      raise ValueError('the model has no weights tfmot prunes (prune_low_magnitude wraps none of its layers).')
    self.schedule = schedule

  def server_init(self, model):
    return collections.OrderedDict(masks=[tf.ones(v.shape, v.dtype) for v in model.trainable_variables],
                                   round_num=tf.constant(0, tf.int64))

  def broadcast(self, state):
    return state['masks']

  def local_options(self, bcast, info) -> local_training.LocalOptions:
    del info
    return local_training.LocalOptions(masks=list(bcast))

  def transform_aggregate(self, aggregate, state):
    return mask_matching(aggregate, list(state['masks']))

  def server_post(self, weights, state):
    round_num = state['round_num'] + 1
    should_prune, target = self.schedule(round_num)
    masks = list(state['masks'])
    trainable = [w * m for w, m in zip(weights.trainable, masks)]
    new_masks = [m if name is None else tf.cond(should_prune, lambda w=w: magnitude_mask(w, target), lambda m=m: m)
                 for name, w, m in zip(self.names, trainable, masks)]
    trainable = [w * m for w, m in zip(trainable, new_masks)]
    pruned = [(name, m) for name, m in zip(self.names, new_masks) if name is not None]
    kept = tf.add_n([tf.reduce_sum(m) for _, m in pruned])
    total = float(sum(int(np.prod(m.shape)) for _, m in pruned))
    zeros = tf.add_n([tf.reduce_sum(tf.cast(tf.equal(w, 0.0), tf.float32)) for w in trainable])
    metrics = collections.OrderedDict(
        sparsity=1.0 - kept / total, target_sparsity=tf.cast(target, tf.float32),
        pruned=tf.cast(should_prune, tf.int32),
        all_weights=zeros / float(sum(int(np.prod(w.shape)) for w in trainable)))
    metrics.update((name, 1.0 - tf.reduce_mean(m)) for name, m in pruned)
    weights = tff.learning.models.ModelWeights(trainable=trainable, non_trainable=weights.non_trainable)
    return weights, collections.OrderedDict(masks=new_masks, round_num=round_num), metrics


def masks_of(state) -> list:
  """The pruning masks (numpy, one per trainable weight) in an engine process state."""
  return [np.asarray(m) for m in state['extensions'][Pruning.name]['masks']]


def mask_matching(value, masks: list):
  """`value` with every part that has the trainable weights' structure (list of tensors shaped like `masks`)
  multiplied by the masks: the whole aggregate (FedAvg, SCAFFOLD), FedNova's `normalized`, ...; other parts as is."""
  leaves = tf.nest.flatten(value)
  if len(leaves) == len(masks) and all(tf.TensorShape(v.shape) == tf.TensorShape(m.shape)
                                       for v, m in zip(leaves, masks)):
    return tf.nest.pack_sequence_as(value, [v * m for v, m in zip(leaves, masks)])
  if isinstance(value, collections.abc.Mapping):
    return type(value)((k, mask_matching(v, masks)) for k, v in value.items())
  if isinstance(value, (list, tuple)) and len(leaves) > len(masks):
    return type(value)(mask_matching(v, masks) for v in value)
  return value


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
