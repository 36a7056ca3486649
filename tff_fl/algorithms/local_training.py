"""The package's one local-training loop, with declared extension points.

Every algorithm's client update runs `train` (FedAvg, FedProx, SCAFFOLD, FedDyn, FedNova, FedPer, Ditto, top-k EF,
fine-tuning evaluation); components add to it through `LocalOptions` (pruning masks, DP-SGD) without their own copy.
Per minibatch, with w the trainable weights:

  g = d loss / d w                          (DP-SGD: per-example gradients clipped to C, summed, + N(0, (zC)^2), / B)
  g += proximal_mu * (w - anchor)           (FedProx, Ditto, FedDyn; anchor defaults to the initial weights)
  g += correction                           (SCAFFOLD's c - c_i, FedDyn's -grad_k; structure of the trainable weights)
  w <- optimizer step;  w <- w * masks      (pruning: pruned weights stay exactly 0)

It mirrors TFF's `model_delta_client_work` step for step (dataset reduce, TFF optimizer, non-finite guard), so with
the same optimizer, data order and initial weights it gives the same update as stock TFF. `data` is anything with
`tf.data.Dataset.reduce`'s contract (a `tf.data.Dataset`, or the engine's packed `TensorBatches`).

Result (OrderedDict): update = initial - final trainable weights (zeroed if not finite), update_weight float32
(examples seen, 1, or 0 when not finite), num_steps, finite (1/0), loss (example-weighted mean), num_examples.
"""

import collections
import dataclasses
import math
from typing import Any, Callable, Optional

import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.learning import tensor_utils

ClientWeighting = tff.learning.ClientWeighting
PerExampleLoss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (labels [B, ...], predictions [B, ...]) -> [B, ...]


@dataclasses.dataclass(frozen=True)
class DPSGD:
  """Sample-level DP-SGD: per-example clip `l2_norm_clip` (C > 0), Gaussian noise z * C on each batch's sum."""
  l2_norm_clip: float
  noise_multiplier: float
  per_example_loss: PerExampleLoss

  def __post_init__(self):
    if not self.l2_norm_clip > 0:
      raise ValueError(f'l2_norm_clip must be > 0; got {self.l2_norm_clip}.')
    if not self.noise_multiplier >= 0:
      raise ValueError(f'noise_multiplier must be >= 0; got {self.noise_multiplier}.')


@dataclasses.dataclass(frozen=True)
class LocalOptions:
  """Extension points of the loop that components set (algorithms set theirs as `train` arguments)."""
  masks: Any = None  # Structure of the trainable weights with 0/1 entries (pruning).
  dp: Optional[DPSGD] = None
  # int64[2] key of DP-SGD's noise (None: unseeded ops). Step s's noise on leaf i is
  # seeded_gaussian(fold_in(fold_in(noise_key, s), i)): same key, same noise (reproducible runs, any engine layout).
  noise_key: Any = None

  def merge(self, other: 'LocalOptions') -> 'LocalOptions':
    names = ('masks', 'dp', 'noise_key')
    for name in names:
      if getattr(self, name) is not None and getattr(other, name) is not None:
        raise ValueError(f'two components set the local-training option {name!r}.')
    return LocalOptions(**{n: getattr(self, n) if getattr(other, n) is None else getattr(other, n) for n in names})


def client_weight(weighting: ClientWeighting, has_non_finite, num_examples):
  """float32 weight of one client's update; 0 for a non-finite update."""
  if weighting == ClientWeighting.NUM_EXAMPLES:
    weight = tf.cast(num_examples, tf.float32)
  elif weighting == ClientWeighting.UNIFORM:
    weight = tf.constant(1.0, tf.float32)
  else:
    raise ValueError(f'client_weighting must be NUM_EXAMPLES or UNIFORM; got {weighting}.')
  return tf.where(has_non_finite > 0, tf.constant(0.0, tf.float32), weight)


def seeded_gaussian(shape, key, stddev: float):
  """float32 N(0, stddev^2) draws of `shape` (static), a pure function of `key` (int64[2]): Box-Muller on one
  stateless uniform draw u [2, n/2] in [2^-126, 1): stddev * sqrt(-2 log u0) * cos(2 pi u1 - {0, pi/2}) (the
  cosine and sine halves). TF's `stateless_normal` kernel computes log/sin/cos one number at a time (~30 ns a number
  on the benchmark machine against ~18 ns here); tests/algorithms/test_dp_sgd_client.py checks the law."""
  shape = tf.TensorShape(shape).as_list()
  size = math.prod(shape)
  half = (size + 1) // 2
  u = tf.random.stateless_uniform([2, half], key, minval=2.0 ** -126, maxval=1.0)
  radius = stddev * tf.sqrt(-2.0 * tf.math.log(u[0]))
  waves = tf.cos((2.0 * math.pi) * u[1] - tf.constant([[0.0], [math.pi / 2]]))
  draws = tf.reshape(radius * waves, [2 * half])
  return tf.reshape(draws if size == 2 * half else draws[:size], shape)


def dp_noise(key, shapes, dp: DPSGD) -> Optional[list]:
  """DP-SGD's Gaussian noise N(0, (z C)^2) for one gradient of leaves of `shapes` (static), or None if z C = 0:
  leaf i's is seeded_gaussian(fold_in(key, i)) for `key` int64[2] (a client's key of its step), unseeded if None."""
  stddev = dp.l2_norm_clip * dp.noise_multiplier
  if not stddev > 0:
    return None
  if key is None:
    return [tf.random.normal(shape, stddev=stddev) for shape in shapes]
  return [seeded_gaussian(shape, tf.random.experimental.stateless_fold_in(key, i), stddev)
          for i, shape in enumerate(shapes)]


def _labels(batch):
  return batch['y'] if isinstance(batch, dict) else batch[1]


def _dp_gradient(model, weights, batch, dp: DPSGD, noise_key=None):
  """Clipped, summed, noised per-example gradients / B, and the output. The law of tensorflow-privacy's
  GaussianSumQuery: each example's gradient scaled by C / max(||g||, C) (NaN if ||g|| is not finite, as
  `tf.clip_by_global_norm`), summed, plus N(0, (z C)^2) per coordinate. The clip is one weighted sum over the
  per-example axis (`tensordot`) rather than a per-example `vectorized_map` (30% of a DP-SGD round on the benchmark)."""
  trainable = tuple(tf.nest.flatten(weights.trainable))
  with tf.GradientTape() as tape:
    output = model.forward_pass(batch, training=True)
    losses = dp.per_example_loss(_labels(batch), output.predictions)
    losses = tf.reshape(losses, [tf.shape(losses)[0], -1])
    losses = tf.reduce_mean(losses, axis=1)  # [B]: a sequence example's loss is the mean over its targets.
  jacobians = tape.jacobian(losses, trainable, unconnected_gradients=tf.UnconnectedGradients.ZERO,
                            experimental_use_pfor=True)  # Leaves [B, *shape].
  squares = [tf.reduce_sum(tf.reshape(tf.square(j), [tf.shape(j)[0], -1]), axis=1) for j in jacobians]
  norms = tf.sqrt(tf.add_n(squares))  # [B]
  clip = tf.constant(dp.l2_norm_clip, tf.float32)
  scale = tf.where(tf.math.is_finite(norms), clip / tf.maximum(norms, clip), tf.fill(tf.shape(norms), float('nan')))
  denominator = tf.cast(tf.maximum(tf.shape(losses)[0], 1), tf.float32)
  sums = [tf.tensordot(scale, j, axes=1) for j in jacobians]
  noise = dp_noise(noise_key, [v.shape for v in trainable], dp)
  if noise is not None:
    sums = [s + n for s, n in zip(sums, noise)]
  return tf.nest.pack_sequence_as(weights.trainable, [s / denominator for s in sums]), output


def batch_gradient(model, weights, batch, dp: Optional[DPSGD] = None, noise_key=None):
  """(gradient of the batch's mean loss w.r.t. `weights.trainable`, forward-pass output); with `dp`, DP-SGD's
  clipped, summed, noised per-example gradients / B (noise keyed by `noise_key`, int64[2], if given). Shared by
  `train` and FedSGD's one-gradient client."""
  if dp is not None:
    return _dp_gradient(model, weights, batch, dp, noise_key)
  with tf.GradientTape() as tape:
    output = model.forward_pass(batch, training=True)
  return tape.gradient(output.loss, weights.trainable, unconnected_gradients=tf.UnconnectedGradients.ZERO), output


def descend(optimizer, opt_state, trainable, grads, *, proximal_mu, anchor, correction, masks):
  """One step of the loop on flat tuples: proximal term, correction, optimizer step, masks -> (opt_state, weights)."""
  terms = [grads]
  if proximal_mu:
    terms.append(tuple(proximal_mu * (w - w0) for w, w0 in zip(trainable, anchor)))
  if correction is not None:
    terms.append(tuple(correction))
  if len(terms) > 1:  # One AddN per leaf: one pass (Grappler rewrites chained adds into a slower accumulator).
    grads = tuple(tf.add_n(list(leaf)) for leaf in zip(*terms))
  opt_state, updated = optimizer.next(opt_state, tuple(trainable), tuple(grads))
  if masks is not None:
    updated = tuple(w * m for w, m in zip(updated, masks))
  return opt_state, tuple(updated)


def _flat_or_none(structure):
  return None if structure is None else tuple(tf.nest.flatten(structure))


def train(model, optimizer: tff.learning.optimizers.Optimizer, initial_weights, data, *,
          weighting: ClientWeighting = ClientWeighting.NUM_EXAMPLES, proximal_mu: float = 0.0, anchor=None,
          correction=None, options: LocalOptions = LocalOptions(), track_metrics: bool = True) -> collections.OrderedDict:
  """Local training from `initial_weights` (ModelWeights) over `data` (see module docstring). Graph/tf.function only.

  `model` is a `tff.learning.models.VariableModel`, or a `client_axis.ClientAxisModel` (a client run on the
  engine's client axis, which trains it with the same steps: `client_axis.train_stacked`). `track_metrics=False` leaves the model's metrics as they
  were (e.g. Ditto's second, personal pass).
  """
  if hasattr(model, 'train_call'):  # A client on the engine's client axis (`client_axis.ClientAxisModel`).
    return model.train_call(optimizer, initial_weights, data, weighting=weighting, proximal_mu=proximal_mu,
                            anchor=anchor, correction=correction, options=options, track_metrics=track_metrics)
  weights = tff.learning.models.ModelWeights.from_model(model)
  saved_metrics = None if track_metrics else [v.read_value() for v in model.local_variables]
  with tf.control_dependencies(saved_metrics or []):
    assign = tf.nest.map_structure(lambda a, b: a.assign(b), weights, initial_weights)
  masks = _flat_or_none(options.masks)
  anchor_trainable = tuple(tf.nest.flatten((initial_weights if anchor is None else anchor).trainable))
  correction = _flat_or_none(correction)
  variables = tf.nest.flatten(weights.trainable)

  def reduce_fn(state, batch):
    num_examples, num_steps, loss_sum, opt_state = state
    step_key = (None if options.noise_key is None
                else tf.random.experimental.stateless_fold_in(options.noise_key, num_steps))
    grads, output = batch_gradient(model, weights, batch, options.dp, step_key)
    opt_state, updated = descend(optimizer, opt_state, tuple(variables), tuple(tf.nest.flatten(grads)),
                                  proximal_mu=proximal_mu, anchor=anchor_trainable, correction=correction,
                                  masks=masks)
    for v, w in zip(variables, updated):
      v.assign(w)
    if output.num_examples is None:
      batch_size = tf.shape(output.predictions, out_type=tf.int64)[0]
    else:
      batch_size = tf.cast(output.num_examples, tf.int64)
    loss_sum += tf.cast(output.loss, tf.float64) * tf.cast(batch_size, tf.float64)
    return num_examples + batch_size, num_steps + 1, loss_sum, opt_state

  specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in variables)
  with tf.control_dependencies(tf.nest.flatten(assign)):
    init = (tf.zeros([], tf.int64), tf.zeros([], tf.int64), tf.zeros([], tf.float64), optimizer.initialize(specs))
  num_examples, num_steps, loss_sum, _ = data.reduce(init, reduce_fn)
  delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable, weights.trainable)
  delta, has_non_finite = tensor_utils.zero_all_if_any_non_finite(delta)
  if saved_metrics is not None:
    with tf.control_dependencies([num_examples]):
      restore = [v.assign(s) for v, s in zip(model.local_variables, saved_metrics)]
    with tf.control_dependencies(restore):
      num_examples = tf.identity(num_examples)
  return result(delta, has_non_finite, weighting, num_examples, num_steps, loss_sum)


def result(delta, has_non_finite, weighting, num_examples, num_steps, loss_sum) -> collections.OrderedDict:
  loss = loss_sum / tf.maximum(tf.cast(num_examples, tf.float64), 1.0)
  return collections.OrderedDict(
      update=delta,
      update_weight=client_weight(weighting, has_non_finite, num_examples),
      num_steps=tf.cast(num_steps, tf.float32),
      finite=tf.cast(tf.equal(has_non_finite, 0), tf.float32),
      loss=tf.cast(loss, tf.float32),
      num_examples=tf.cast(num_examples, tf.float32))


def trained_weights(initial_weights, result) -> tff.learning.models.ModelWeights:
  """The weights local training ended at: initial - update (the initial weights if the update was not finite)."""
  return tff.learning.models.ModelWeights(
      trainable=tf.nest.map_structure(tf.subtract, initial_weights.trainable, result['update']),
      non_trainable=initial_weights.non_trainable)
