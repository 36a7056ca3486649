"""Local training of a whole slot of clients at once, on a client axis (FedJAX's `for_each_client`).

The engine maps each client's `algorithm.client_update` over the slot with `tf.vectorized_map`, but local training
itself runs outside that map, as one `tf.while_loop` over steps whose body is one mapped step for every client (a
`tf.while_loop` inside `tf.vectorized_map` is slow: its converted form partitions and restacks every input each
iteration). So `client_update` is traced in stages, with a `ClientAxisModel` as the context's model:

  stage k: `ctx.train` calls 0..k-1 return their results (computed by earlier stages); call k records its
           arguments (start weights, anchor, correction, masks: per client) and returns zeros; the stage's map
           outputs the recorded arguments, and `train_stacked` runs that call for every client.
  last stage (no new call): the map's outputs are the clients' real outputs.

Unused work of a recording stage (the update math after the call) feeds no output, so TF prunes it.
`train_stacked` steps the clients together without `tf.vectorized_map` (converting a whole training step was most
of the first version's ~30 s first round, README): weights are stacked [C, ...], the forward pass is the functional
model's `apply_stacked` (a batched matmul per Dense layer, a grouped convolution per Conv2D), the gradient of the
sum of the clients' mean losses is each client's own gradient, and the optimizer steps all clients at once, which
holds for elementwise optimizers only (`_ELEMENTWISE`; others run sequentially). A later step runs only on the
clients that have it (gathered, then scattered back), so clients of different sizes cost no padded steps; only a
client's last batch is padded (to B rows, masked). A mean gradient at the broadcast weights without a step
(FedSGD's update, the drift measurements: `gradient_call`) is recorded and run the same way, summing each
client's batch gradients (`_gradients_stacked`). DP-SGD's steps (`LocalOptions.dp`, Dense models) clip
per-example gradients from per-example norms without forming them (`_dp_gradients`) and add each client's own
seeded noise, as the sequential loop does.
"""

import collections
import dataclasses
from typing import Any, Callable, Optional

import tensorflow as tf

from tensorflow_federated.python.learning.optimizers import adagrad
from tensorflow_federated.python.learning.optimizers import adam
from tensorflow_federated.python.learning.optimizers import adamw
from tensorflow_federated.python.learning.optimizers import rmsprop
from tensorflow_federated.python.learning.optimizers import sgdm
from tensorflow_federated.python.learning.optimizers import yogi

from tff_fl.algorithms import local_training
from tff_fl.algorithms import optimizers
from tff_fl.models import functional

# pylint: disable=protected-access
_ELEMENTWISE = (sgdm._SGD, adam._Adam, adamw._AdamW, adagrad._Adagrad, rmsprop._RmsProp, yogi._Yogi)


@dataclasses.dataclass(frozen=True)
class Call:
  """The static part of one recorded call; per-client tensors travel in `args` (start, anchor, correction, masks:
  None = the broadcast weights / the start / none). kind 'train': `local_training.train`; 'gradient': the mean
  gradient and loss over the client's batches at the broadcast weights (`gradient_call`), no step."""
  optimizer: Any
  weighting: Any
  proximal_mu: float
  track_metrics: bool
  shared_start: bool
  kind: str = 'train'
  dp: Any = None  # local_training.DPSGD: DP-SGD's clipped, noised gradients (`_dp_gradients`).


class ClientAxisModel:
  """The model of one client inside a stage's map (module docstring). `results`: per-client results of the calls
  earlier stages ran; `broadcast`: the broadcast ModelWeights (a call starting there shares its first step)."""

  def __init__(self, functional_model: functional.FunctionalModel, broadcast, results: list):
    self.functional, self.broadcast, self.results = functional_model, broadcast, results
    self.recorded: Optional[tuple] = None  # (Call, args) of the first call without a result.
    self._calls = 0

  def train_call(self, optimizer, initial_weights, data, *, weighting, proximal_mu, anchor, correction, options,
                 track_metrics):
    del data  # The slot's own batches (packed per client); algorithms that pass other data do not use this model.
    if options.dp is not None and not self.functional.shared_step:
      raise functional.Unsupported('DP-SGD on the client axis takes per-example gradient norms from Dense layers on '
                                   '[B, features] only')
    k, self._calls = self._calls, self._calls + 1
    if k < len(self.results):
      return self.results[k]
    if _holds_graph_tensors(optimizer):
      raise functional.Unsupported(f'the client optimizer {type(optimizer).__name__} holds tensors of the client '
                                   'update (e.g. a per-client shift), which cannot leave the client function')
    if not _elementwise(optimizer):
      raise functional.Unsupported(f'the client optimizer {type(optimizer).__name__} is not one the client axis '
                                   'steps elementwise (SGD(M), Adam, AdamW, Adagrad, RMSProp, Yogi)')
    shared = initial_weights is self.broadcast
    if self.recorded is None:
      call = Call(optimizer, weighting, float(proximal_mu), bool(track_metrics), shared, dp=options.dp)
      args = collections.OrderedDict(
          start=None if shared else initial_weights.trainable,
          anchor=None if anchor is None else anchor.trainable, correction=correction, masks=options.masks,
          noise_key=None if options.dp is None else options.noise_key)
      self.recorded = (call, collections.OrderedDict((k, v) for k, v in args.items() if v is not None))
    zeros = tf.nest.map_structure(tf.zeros_like, initial_weights.trainable)
    scalar = tf.zeros([], tf.float32)
    return collections.OrderedDict(update=zeros, update_weight=scalar, num_steps=scalar, finite=scalar, loss=scalar,
                                   num_examples=scalar)

  def gradient_call(self, initial_weights, options, *, track_metrics):
    """OrderedDict(gradient (trainable structure), loss, num_examples): the example-weighted mean gradient and loss
    of the client's batches at `initial_weights`, which must be the broadcast weights (FedSGD's client update, the
    drift measurements' gradient); the model's metrics count the batches if `track_metrics`."""
    if options.dp is not None:
      raise functional.Unsupported('a mean gradient under DP-SGD (FedSGD, drift) runs sequentially')
    k, self._calls = self._calls, self._calls + 1
    if k < len(self.results):
      return self.results[k]
    if initial_weights is not self.broadcast:
      raise functional.Unsupported('a mean gradient at weights other than the broadcast ones runs sequentially')
    if self.recorded is None:
      self.recorded = (Call(None, None, 0.0, bool(track_metrics), True, kind='gradient'), collections.OrderedDict())
    return collections.OrderedDict(gradient=tf.nest.map_structure(tf.zeros_like, initial_weights.trainable),
                                   loss=tf.zeros([], tf.float32), num_examples=tf.zeros([], tf.float32))


def _holds_graph_tensors(obj, depth: int = 3) -> bool:
  """True if `obj` (an optimizer) keeps symbolic tensors among its attributes (looked up to `depth` levels)."""
  if tf.is_tensor(obj):
    return not hasattr(obj, 'numpy')
  if depth == 0:
    return False
  if isinstance(obj, (list, tuple)):
    return any(_holds_graph_tensors(v, depth - 1) for v in obj)
  if isinstance(obj, dict):
    return any(_holds_graph_tensors(v, depth - 1) for v in obj.values())
  return hasattr(obj, '__dict__') and any(_holds_graph_tensors(v, depth - 1) for v in vars(obj).values())


def _elementwise(optimizer) -> bool:
  """True for optimizers whose step is elementwise with scalar hyperparameters (TFF's SGD(M), Adam, AdamW,
  Adagrad, RMSProp, Yogi, optionally under `optimizers.WeightDecay`): they step stacked clients as one."""
  while isinstance(optimizer, optimizers.WeightDecay):
    optimizer = optimizer.inner
  return isinstance(optimizer, _ELEMENTWISE)


def _stack(t, num):
  return tf.broadcast_to(t[tf.newaxis], tf.concat([[num], tf.shape(t)], 0))


def _client_gradients(fm: functional.FunctionalModel, weights, batch, mask, shared: bool, of_mean: bool,
                      dp=None, noise: Optional[Callable] = None):
  """Each client's gradient of its batch loss -> (grads [c, ...] per leaf, logits, sizes [c], mean losses [c], loss
  sums [c]): of its mean loss (`of_mean`) or of its summed example losses, or with `dp` (local_training.DPSGD)
  DP-SGD's gradient (`_dp_gradients`, noise from `noise(grads)`). Rows with mask 0 count for nothing; the
  gradient of the sum over clients is each client's own gradient. `shared`: `weights` are one set for every client
  (one matmul per layer, `apply_tapped`, per-client weight gradients from `dense_gradients`); else each leaf is
  [c, ...]. The losses are the model's."""
  taps = []
  with tf.GradientTape() as tape:
    tape.watch(weights)
    if shared or dp is not None:
      logits = fm.apply_tapped(list(weights), batch['x'], taps, stacked=not shared)
    else:
      logits = fm.apply_stacked(list(weights), batch['x'])
    sizes = tf.reduce_sum(mask, axis=1)
    sums = tf.reduce_sum(fm.per_example_loss(batch['y'], logits) * mask, axis=1)
    losses = sums / tf.maximum(sizes, 1.0)
    if dp is None:
      total = tf.reduce_sum(losses if of_mean else sums)
    else:
      total = tf.reduce_sum(_dp_losses(dp, batch['y'], logits) * mask)
  if dp is not None:
    deltas = tape.gradient(total, [t[3] for t in taps], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return _dp_gradients(fm, len(weights), taps, deltas, sizes, dp, noise), logits, sizes, losses, sums
  if shared:
    deltas = tape.gradient(total, [t[3] for t in taps], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    grads = fm.dense_gradients(len(weights), taps, deltas)
  else:
    grads = tape.gradient(total, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return tuple(grads), logits, sizes, losses, sums


def _dp_losses(dp, y, logits):
  """[c, B]: DP-SGD's per-example losses (a sequence example's: the mean over its targets), as
  `local_training._dp_gradient` takes them."""
  flat_y = tf.reshape(y, tf.concat([[-1], tf.shape(y)[2:]], 0))
  losses = dp.per_example_loss(flat_y, tf.reshape(logits, tf.concat([[-1], tf.shape(logits)[2:]], 0)))
  losses = tf.reduce_mean(tf.reshape(tf.cast(losses, tf.float32), [tf.shape(flat_y)[0], -1]), axis=1)
  return tf.reshape(losses, tf.shape(logits)[:2])


def _dp_gradients(fm, num_weights, taps, deltas, sizes, dp, noise) -> tuple:
  """Per client, `local_training._dp_gradient`'s law without per-example gradients ("ghost" norms, Goodfellow
  2015): example e's gradient of a Dense kernel is x_e d_e^T (x_e its input row, d_e the gradient of its loss at
  the pre-activation), of squared norm ||x_e||^2 ||d_e||^2 (the bias's: ||d_e||^2). Scaling each d_e by
  C / max(||g_e||, C) (NaN if the norm is not finite) makes `dense_gradients` the clipped sum, one batched
  matmul per layer; then + noise, / the client's batch size. Padded rows have d_e = 0 and add nothing."""
  squares = 0.0
  for (_, b, x, _), d in zip(taps, deltas):
    out = tf.reduce_sum(tf.square(d), axis=-1)  # [c, B]
    squares += tf.reduce_sum(tf.square(x), axis=-1) * out + (out if b is not None else 0.0)
  norms = tf.sqrt(squares)
  clip = tf.constant(dp.l2_norm_clip, tf.float32)
  scale = tf.where(tf.math.is_finite(norms), clip / tf.maximum(norms, clip), tf.fill(tf.shape(norms), float('nan')))
  grads = fm.dense_gradients(num_weights, taps, [d * scale[..., tf.newaxis] for d in deltas])
  noises = noise(grads)
  if noises is not None:
    grads = [g + n for g, n in zip(grads, noises)]
  per_client = lambda g: tf.reshape(tf.maximum(sizes, 1.0), [-1] + [1] * (g.shape.rank - 1))
  return tuple(g / per_client(g) for g in grads)


def _dp_noise(dp, keys, step, shapes):
  """grads -> the noise `local_training.dp_noise` gives each client at its local step `step` (key: fold_in(the
  client's key, step), as the sequential loop's), stacked [c, ...] per leaf; None if none; unseeded if `keys`
  (int64 [c, 2]) is None. `shapes`: the weights' shapes."""

  def noise(grads):
    if not dp.l2_norm_clip * dp.noise_multiplier > 0:
      return None
    if keys is None:
      return local_training.dp_noise(None, [tf.shape(g) for g in grads], dp)
    one = lambda key: local_training.dp_noise(
        tf.random.experimental.stateless_fold_in(key, tf.cast(step, tf.int64)), shapes, dp)
    return tf.map_fn(one, keys, fn_output_signature=[tf.TensorSpec(shape, tf.float32) for shape in shapes])

  return noise


def _step_fn(fm: functional.FunctionalModel, call: Call, shapes):
  """(weights, opt state, batch, mask, anchor, correction, masks, shared, step, noise keys) -> (opt state, weights,
  sizes [c], losses [c], metric increments): one local step of `local_training.train` for c stacked clients on the
  functional model (rows with mask 0 are padding and count for nothing). Every client's loss is the mean over its
  real rows, so the gradient of their sum gives each client its own gradient (DP-SGD: `_dp_gradients`, its noise
  keyed by the client's key and `step`). `shared`: the weights are one set for every client (the broadcast), run
  as one matmul per layer (`apply_tapped`); else each leaf is [c, ...]. `shapes`: the weights' shapes."""

  def step(weights, opt_state, batch, mask, anchor, correction, masks, shared, index, keys):
    noise = None if call.dp is None else _dp_noise(call.dp, keys, index, shapes)
    grads, logits, sizes, losses, _ = _client_gradients(fm, weights, batch, mask, shared, of_mean=True, dp=call.dp,
                                                        noise=noise)
    if shared:
      weights = tuple(tf.broadcast_to(w, tf.shape(g)) for w, g in zip(weights, grads))  # The optimizer's shapes.
    opt_state, updated = local_training.descend(call.optimizer, opt_state, weights, tuple(grads),
                                                proximal_mu=call.proximal_mu, anchor=anchor, correction=correction,
                                                masks=masks)
    increments = fm.metric_increments(batch['y'], logits, mask, losses) if call.track_metrics else []
    return opt_state, tuple(updated), sizes, losses, increments

  return step


def train_stacked(fm: functional.FunctionalModel, call: Call, args, broadcast, clients, client_steps,
                  batch_fn: Callable) -> tuple:
  """Runs a recorded `call` for every client -> (its results stacked on the client axis, metric increments summed
  over the clients). `args`: the call's per-client tensors stacked; `clients`: the slot's per-client inputs
  (stacked); `client_steps` int32[C]: each client's number of local steps: step i > 0 runs only on the clients
  that have it (gathered, and scattered back into the stacked state; the optimizer's scalar state, e.g. Adam's
  step count, is shared: every client that runs step i has run steps 0..i-1); `batch_fn(client, i)` -> (batch,
  mask) of one client's step i, mapped over the clients with `tf.vectorized_map`."""
  if call.kind == 'gradient':
    return _gradients_stacked(fm, call, broadcast, clients, client_steps, batch_fn)
  num = client_steps.shape[0] or tf.shape(client_steps)[0]  # Static when known (stacked shapes stay static).
  flat = lambda name: tuple(tf.nest.flatten(args[name])) if name in args else None
  # Clients starting from the broadcast share their first step's weights (one matmul per layer) if the model
  # allows it; else the start is stacked.
  shared = call.shared_start and fm.shared_step
  broadcast_flat = tuple(tf.nest.flatten(broadcast.trainable))
  start = (broadcast_flat if shared else tuple(_stack(t, num) for t in broadcast_flat) if call.shared_start
           else flat('start'))
  per_client = dict(anchor=flat('anchor'), correction=flat('correction'), masks=flat('masks'),
                    noise_key=(args['noise_key'],) if 'noise_key' in args else None)
  specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in tf.nest.flatten(broadcast.trainable))
  opt_state = tf.nest.map_structure(
      lambda t: _stack(t, num) if t.shape.rank else t,
      tf.nest.map_structure(tf.convert_to_tensor, call.optimizer.initialize(specs)))
  step = _step_fn(fm, call, [s.shape for s in specs])

  def batches(i, rows=None):
    pick = (lambda t: t) if rows is None else (lambda t: tf.gather(t, rows))
    return tf.vectorized_map(lambda client: batch_fn(client, i), tf.nest.map_structure(pick, clients))

  def run_step(i, weights, opt_state, rows=None, shared_weights=False):
    pick = (lambda t: t) if rows is None else (lambda t: tf.gather(t, rows))
    extra = {k: None if v is None else tuple(pick(t) for t in v) for k, v in per_client.items()}
    anchor = extra['anchor']
    if anchor is None:  # `train`'s anchor defaults to its start (shared: no rows to pick).
      anchor = start if shared else tuple(pick(t) for t in start)
    batch, mask = batches(i, rows)
    weights = weights if shared_weights else tuple(pick(w) for w in weights)
    keys = None if extra['noise_key'] is None else extra['noise_key'][0]
    return step(weights, opt_state, batch, mask, anchor, extra['correction'], extra['masks'], shared_weights, i, keys)

  # Step 0's weights come back stacked [C, ...] (from a shared start, the optimizer stepped them broadcast).
  opt_state, weights, sizes, losses, increments = run_step(tf.constant(0), start, opt_state, shared_weights=shared)
  examples = tf.cast(sizes, tf.int64)
  steps = tf.cast(sizes > 0, tf.int64)
  loss_sums = tf.cast(losses, tf.float64) * tf.cast(sizes, tf.float64)
  num_steps = tf.reduce_max(tf.concat([client_steps, [0]], 0))
  structure = (weights, opt_state, examples, steps, loss_sums, increments)

  def later_step(i, leaves):
    """Step i on the clients that have it: gathered rows, scattered back (per-client leaves have rank >= 1)."""
    weights, opt_state, examples, steps, loss_sums, increments = tf.nest.pack_sequence_as(structure, leaves)
    rows = tf.cast(tf.where(client_steps > i), tf.int32)
    gather = lambda t: tf.gather(t, rows[:, 0]) if t.shape.rank else t
    new_opt, new_weights, sizes, losses, new_increments = run_step(
        i, weights, tf.nest.map_structure(gather, opt_state), rows[:, 0])
    scatter = lambda t, n: tf.tensor_scatter_nd_update(t, rows, n) if t.shape.rank else n
    weights = tuple(scatter(t, n) for t, n in zip(weights, new_weights))
    opt_state = tf.nest.map_structure(scatter, opt_state, new_opt)
    add = lambda t, n: tf.tensor_scatter_nd_add(t, rows, n)
    examples = add(examples, tf.cast(sizes, tf.int64))
    steps = add(steps, tf.cast(sizes > 0, tf.int64))
    loss_sums = add(loss_sums, tf.cast(losses, tf.float64) * tf.cast(sizes, tf.float64))
    increments = [a + b for a, b in zip(increments, new_increments)]
    return i + 1, tf.nest.flatten((weights, opt_state, examples, steps, loss_sums, increments))

  _, leaves = tf.while_loop(lambda i, _: i < num_steps, later_step, (tf.constant(1), tf.nest.flatten(structure)))
  final, _, num_examples, steps, loss_sum, increments = tf.nest.pack_sequence_as(structure, leaves)

  # Deltas on the stacked weights; zero where not finite or where no step ran.
  delta = [a - b for a, b in zip(start, final)]
  rows_of = lambda t: tf.reshape(t, [tf.shape(t)[0], -1])
  finite = tf.reduce_all(tf.stack([tf.reduce_all(rows_of(tf.math.is_finite(d)), axis=1) for d in delta], 1), 1)
  good = tf.logical_and(finite, steps > 0)
  finite = tf.logical_or(finite, tf.equal(steps, 0))  # A client without steps has a (zero) finite update.
  delta = tf.cond(tf.reduce_all(good), lambda: delta, lambda: [  # Usually all good: skip a pass over the updates.
      tf.where(tf.reshape(good, [-1] + [1] * (d.shape.rank - 1)), d, tf.zeros_like(d)) for d in delta])
  results = local_training.result(tf.nest.pack_sequence_as(broadcast.trainable, delta),
                                  tf.cast(tf.logical_not(finite), tf.int32), call.weighting, num_examples, steps,
                                  loss_sum)
  return results, list(increments)


def _gradients_stacked(fm: functional.FunctionalModel, call: Call, broadcast, clients, client_steps,
                       batch_fn: Callable) -> tuple:
  """A recorded 'gradient' call for every client (`train_stacked`'s contract): per client, the sum over its
  batches of the gradient of its summed example losses at the broadcast weights (one matmul per layer over the
  whole cohort when the model allows it), divided by its examples; the mean loss likewise."""
  num = client_steps.shape[0] or tf.shape(client_steps)[0]
  weights = tuple(tf.nest.flatten(broadcast.trainable))
  shared = fm.shared_step

  def batch_gradients(i):
    batch, mask = tf.vectorized_map(lambda client: batch_fn(client, i), clients)
    stacked = weights if shared else tuple(_stack(w, num) for w in weights)
    grads, logits, sizes, losses, sums = _client_gradients(fm, stacked, batch, mask, shared, of_mean=False)
    increments = fm.metric_increments(batch['y'], logits, mask, losses) if call.track_metrics else []
    return grads, tf.cast(sums, tf.float64), sizes, increments

  grads, loss_sums, examples, increments = batch_gradients(tf.constant(0))
  structure = (grads, loss_sums, examples, increments)

  def later(i, leaves):
    total = tf.nest.pack_sequence_as(structure, leaves)
    return i + 1, tf.nest.flatten(tf.nest.map_structure(tf.add, total, batch_gradients(i)))

  num_steps = tf.reduce_max(tf.concat([client_steps, [0]], 0))
  _, leaves = tf.while_loop(lambda i, _: i < num_steps, later, (tf.constant(1), tf.nest.flatten(structure)))
  grads, loss_sums, examples, increments = tf.nest.pack_sequence_as(structure, leaves)
  per_client = lambda t: tf.reshape(tf.maximum(examples, 1.0), [-1] + [1] * (t.shape.rank - 1))
  static = lambda g, w: tf.reshape(g, [num if isinstance(num, int) else -1] + w.shape.as_list())  # Static dims.
  gradient = tf.nest.pack_sequence_as(broadcast.trainable,
                                      [static(g, w) / per_client(g) for g, w in zip(grads, weights)])
  loss = tf.cast(loss_sums / tf.cast(tf.maximum(examples, 1.0), tf.float64), tf.float32)
  return collections.OrderedDict(gradient=gradient, loss=loss, num_examples=examples), list(increments)
