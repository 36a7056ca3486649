"""Local training of a whole slot of clients at once, on a client axis (FedJAX's `for_each_client`).

The engine maps each client's `algorithm.client_update` over the slot with `tf.vectorized_map`, but local training
itself runs outside that map, as one `tf.while_loop` over steps whose body is one mapped step for every client (a
`tf.while_loop` inside `tf.vectorized_map` is slow: its converted form partitions and restacks every input each
iteration). So `client_update` is traced in stages, with a `ClientAxisModel` as the context's model:

  stage k: `ctx.train` calls 0..k-1 return their results (computed by earlier stages); call k records its
           arguments (start weights, anchor, correction, masks: per client) and returns zeros; the stage's map
           outputs the recorded arguments, and `train_stacked` runs that call for every client.
  last stage (no new call): the map's outputs are the clients' real outputs.

Unused work of a recording stage (the update math after the call) feeds no output, so TF prunes it. In
`train_stacked` the first step, where clients start from the broadcast weights, is one mapped step on shared
weights, which `tf.vectorized_map` turns into one matmul over the whole cohort; a later step runs only on the
clients that have it (gathered, then scattered back), so clients of different sizes cost no padded steps; only a
client's last batch is padded (to B rows, masked).
"""

import collections
import dataclasses
from typing import Any, Callable, Optional

import tensorflow as tf

from tff_fl.algorithms import local_training
from tff_fl.models import functional


@dataclasses.dataclass(frozen=True)
class Call:
  """The static part of one recorded `train` call; per-client tensors travel in `args` (start, anchor,
  correction, masks: None = the broadcast weights / the start / none)."""
  optimizer: Any
  weighting: Any
  proximal_mu: float
  track_metrics: bool
  shared_start: bool
  has_anchor: bool
  has_correction: bool
  has_masks: bool


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
    if options.dp is not None:
      raise functional.Unsupported('DP-SGD runs on the sequential engine')
    k, self._calls = self._calls, self._calls + 1
    if k < len(self.results):
      return self.results[k]
    if _holds_graph_tensors(optimizer):
      raise functional.Unsupported(f'the client optimizer {type(optimizer).__name__} holds tensors of the client '
                                   'update (e.g. a per-client shift), which cannot leave the client function')
    shared = initial_weights is self.broadcast
    if self.recorded is None:
      call = Call(optimizer, weighting, float(proximal_mu), bool(track_metrics), shared, anchor is not None,
                  correction is not None, options.masks is not None)
      args = collections.OrderedDict(
          start=None if shared else initial_weights.trainable,
          anchor=None if anchor is None else anchor.trainable, correction=correction, masks=options.masks)
      self.recorded = (call, collections.OrderedDict((k, v) for k, v in args.items() if v is not None))
    zeros = tf.nest.map_structure(tf.zeros_like, initial_weights.trainable)
    scalar = tf.zeros([], tf.float32)
    return collections.OrderedDict(update=zeros, update_weight=scalar, num_steps=scalar, finite=scalar, loss=scalar,
                                   num_examples=scalar)


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


def _step_fn(fm: functional.FunctionalModel, call: Call, anchor, correction, masks):
  """(state, batch, mask) -> state: one local step of `local_training.train` on the functional model; rows with
  mask 0 (padding) count for nothing. A client only runs the steps it has (`train_stacked`), except a client
  without any batch, which runs step 0 on padding: it adds no example, step or metric, and its delta is zeroed.
  state = (weights, opt state, examples, steps, loss sum, metric increments)."""

  def step(state, batch, mask):
    weights, opt_state, num_examples, num_steps, loss_sum, metric_sums = state
    with tf.GradientTape() as tape:
      tape.watch(weights)
      logits = fm.apply(list(weights), batch['x'])
      size = tf.reduce_sum(mask)
      loss = tf.reduce_sum(fm.per_example_loss(batch['y'], logits) * mask) / tf.maximum(size, 1.0)
    grads = tape.gradient(loss, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    new_opt_state, updated = local_training.descend(
        call.optimizer, opt_state, weights, tuple(grads), proximal_mu=call.proximal_mu,
        anchor=anchor, correction=correction, masks=masks)
    active = size > 0
    if call.track_metrics:
      metric_sums = [a + b for a, b in zip(metric_sums, fm.metric_increments(batch['y'], logits, mask, loss))]
    return (tuple(updated), new_opt_state, num_examples + tf.cast(size, tf.int64),
            num_steps + tf.cast(active, tf.int64), loss_sum + tf.cast(loss, tf.float64) * tf.cast(size, tf.float64),
            metric_sums)

  return step


def train_stacked(fm: functional.FunctionalModel, call: Call, args, broadcast, clients, client_steps,
                  batch_fn: Callable) -> tuple:
  """Runs a recorded `call` for every client -> (its results stacked on the client axis, metric increments summed
  over the clients). `args`: the call's per-client tensors stacked; `clients`: the slot's per-client inputs
  (stacked); `client_steps` int32[C]: each client's number of local steps: step i > 0 runs only on the clients
  that have it (gathered, and scattered back into the stacked state); `batch_fn(client, i)` -> (batch, mask) of
  one client's step i, inside the map."""
  start = tuple(tf.nest.flatten(broadcast.trainable)) if call.shared_start else None
  specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in tf.nest.flatten(broadcast.trainable))
  zero_metrics = [tf.zeros([], d) for _, dtypes, _ in fm.metrics for d in dtypes] if call.track_metrics else []
  init = (start, call.optimizer.initialize(specs), tf.zeros([], tf.int64), tf.zeros([], tf.int64),
          tf.zeros([], tf.float64), zero_metrics)
  num_steps = tf.reduce_max(tf.concat([client_steps, [0]], 0))

  def mapped_step(i, state, rows=None):
    def one(inputs):
      flat = lambda name: tuple(tf.nest.flatten(inputs['args'][name])) if name in inputs['args'] else None
      first = start if start is not None else flat('start')
      s = inputs['state'] if state is not None else (first,) + init[1:]
      anchor = flat('anchor') if call.has_anchor else first  # `train`'s anchor defaults to its start.
      step = _step_fn(fm, call, anchor, flat('correction'), flat('masks'))
      return step(s, *batch_fn(inputs['client'], i))

    pick = (lambda t: t) if rows is None else (lambda t: tf.gather(t, rows))
    inputs = dict(client=tf.nest.map_structure(pick, clients), args=tf.nest.map_structure(pick, args))
    if state is not None:
      inputs['state'] = tf.nest.map_structure(pick, state)
    return tf.vectorized_map(one, inputs)

  state = mapped_step(tf.constant(0), None)
  structure = state

  def later_step(i, leaves):
    state = tf.nest.pack_sequence_as(structure, leaves)
    active = client_steps > i

    def some():  # Only the clients that have step i, scattered back into the stacked state.
      rows = tf.cast(tf.where(active), tf.int32)
      new = tf.nest.flatten(mapped_step(i, state, rows[:, 0]))
      return [tf.tensor_scatter_nd_update(t, rows, n) for t, n in zip(leaves, new)]

    return i + 1, tf.cond(tf.reduce_all(active), lambda: tf.nest.flatten(mapped_step(i, state)), some)

  leaves = tf.nest.flatten(state)
  _, leaves = tf.while_loop(lambda i, _: i < num_steps, later_step, (tf.constant(1), leaves))
  final, _, num_examples, steps, loss_sum, metric_sums = tf.nest.pack_sequence_as(structure, leaves)

  # Deltas on the stacked weights (a shared start broadcasts); zero where not finite or where no step ran.
  first = start if start is not None else tuple(tf.nest.flatten(args['start']))
  delta = [a - b for a, b in zip(first, final)]
  per_client = lambda t: tf.reshape(t, [tf.shape(t)[0], -1])
  finite = tf.reduce_all(tf.stack([tf.reduce_all(per_client(tf.math.is_finite(d)), axis=1) for d in delta], 1), 1)
  good = tf.logical_and(finite, steps > 0)
  finite = tf.logical_or(finite, tf.equal(steps, 0))  # A client without steps has a (zero) finite update.

  def zero_bad():
    return [tf.where(tf.reshape(good, [-1] + [1] * (d.shape.rank - 1)), d, tf.zeros_like(d)) for d in delta]

  delta = tf.cond(tf.reduce_all(good), lambda: delta, zero_bad)
  delta = tf.nest.pack_sequence_as(broadcast.trainable, delta)

  def result(inputs):
    return local_training.result((), tf.cast(tf.logical_not(inputs['finite']), tf.int32), call.weighting,
                                 inputs['examples'], inputs['steps'], inputs['loss_sum'])

  scalars = tf.vectorized_map(result, dict(finite=finite, examples=num_examples, steps=steps, loss_sum=loss_sum))
  scalars['update'] = delta
  return scalars, [tf.reduce_sum(m, axis=0) for m in metric_sums]
