"""Per-client evaluation on the engine: the population's eval examples packed as flat tensors, one TF call per slot.

  evaluator = evaluation.build_evaluator(task)                    # or (model_fn, eval_arrays, pad_id=...)
  results = evaluator(weights, client_ids)                        # [OrderedDict(loss_sum, correct, num_examples,
  summary = evaluation.summarize(client_ids, results)             #              num_predictions)] in client order

Layout of one CLIENTS slot (a contiguous chunk of the requested clients; `num_slots` chunks, so a population splits
over workers like a cohort): x [N, ...], y [N, ...] (the chunk's clients' rows concatenated in client order),
segment int32[N] (a row's client, counted from the first client of its group), and the chunk cut into groups of
consecutive clients that evaluate the same weights: group_rows int32[G], group_clients int32[G]. A group's rows are
evaluated in batches of `batch_size` and summed per client with `unsorted_segment_sum`; groups write [K_g, 4]
blocks that concatenate to the slot's [K, 4] sums. One group per slot for the broadcast model, one per client for
personal / fine-tuned models, one per model for `evaluate_models` (clients sorted by model). With one slot
(`runtime='local'`, the default) the slot's TF call runs in this process (the federated map over one slot is the
call itself); several slots (or `runtime='tff'`) run as a federated computation on TFF's runtime.

Per example (matching `tff.learning.models.from_keras_model`'s batch loss, which averages the per-target
cross-entropy over every target of the batch, pads included: Keras masks do not reach it):
  loss_sum += mean over the example's targets of `per_example_loss(y, logits)` (default: sparse categorical
              cross-entropy from logits); so a client's loss_sum = sum over batches of batch-mean loss * rows
  correct += targets with argmax(logits) == y and y != pad_id;  num_predictions += targets with y != pad_id
  num_examples += 1
(`pad_id` None counts every target.) Models with regularization losses (`keras_model.losses`) are not supported.

Clients evaluating different weights, in the same packed call:
  evaluator.evaluate_models(models, model_of)      # client i evaluates models[model_of[i]] (hierarchical clusters)
  personal_accuracies(process, state, task)        # algorithm.personal_weights(global, client state) (FedPer, Ditto)
  finetuned_accuracies(task, weights, optimizer, epochs=, batch_size=, seed=)   # local fine-tuning, then evaluation
"""

import collections
import weakref
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import local_training
from tff_fl.algorithms import model_types as model_types_lib
from tff_fl.engine import local_round
from tff_fl.engine import packing
from tff_fl.engine import process as process_lib

EVAL_KEYS = ('loss_sum', 'correct', 'num_examples', 'num_predictions')
DEFAULT_BATCH_SIZE = 1000
STATE_BYTES_PER_CALL = 2**28  # Client states packed into one personal-evaluation call.
TRAIN_BYTES_PER_CALL = 2**29  # Packed training rows of one fine-tuning-evaluation call.
PerExampleLoss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (labels [B, ...], logits [B, ..., V]) -> [B, ...]


def cross_entropy(labels, logits):
  """Per-target sparse categorical cross-entropy from logits, [B, ...] (the loss of our TFF models)."""
  return tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def example_values(labels, logits, pad_id: Optional[int], loss_fn: PerExampleLoss) -> tf.Tensor:
  """float32[B, 4]: each example's (loss, correct, 1, predictions) in `EVAL_KEYS` order (module docstring)."""
  b = tf.shape(labels)[0]
  per_example = lambda t: tf.reshape(t, [b, -1])
  loss = tf.reduce_mean(per_example(tf.cast(loss_fn(labels, logits), tf.float32)), axis=1)
  y = tf.cast(labels, tf.int64)
  counted = tf.ones_like(y, tf.float32) if pad_id is None else tf.cast(tf.not_equal(y, pad_id), tf.float32)
  hit = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int64), y), tf.float32) * counted
  return tf.stack([loss, tf.reduce_sum(per_example(hit), 1), tf.ones([b], tf.float32),
                   tf.reduce_sum(per_example(counted), 1)], axis=1)


def _assign(model, weights):
  return tf.nest.flatten(tf.nest.map_structure(lambda v, w: v.assign(w),
                                               tff.learning.models.ModelWeights.from_model(model), weights))


def group_sums(model, slot, weights_fn, *, batch_size: int, pad_id, loss_fn) -> tf.Tensor:
  """float64[K, 4] per-client sums of a slot (layout in the module docstring); group g evaluates `weights_fn(g)`
  (ModelWeights, TF). Graph/tf.function only."""
  num_groups = tf.shape(slot['group_rows'])[0]
  row_starts = tf.concat([[0], tf.cumsum(slot['group_rows'])], 0)

  def group(g, blocks):
    with tf.control_dependencies([blocks.flow]):  # The previous group's reads finish before this one assigns.
      assigns = _assign(model, weights_fn(g))
    lo, hi, num_clients = row_starts[g], row_starts[g + 1], slot['group_clients'][g]

    def batch(i, sums):
      start = lo + i * batch_size
      end = tf.minimum(hi, start + batch_size)
      logits = model.predict_on_batch(slot['x'][start:end], training=False)
      values = tf.cast(example_values(slot['y'][start:end], logits, pad_id, loss_fn), tf.float64)
      return i + 1, sums + tf.math.unsorted_segment_sum(values, slot['segment'][start:end], num_clients)

    with tf.control_dependencies(assigns):
      num_batches = (hi - lo + batch_size - 1) // batch_size
      _, sums = tf.while_loop(lambda i, _: i < num_batches, batch,
                              (tf.constant(0), tf.zeros([num_clients, len(EVAL_KEYS)], tf.float64)),
                              shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, len(EVAL_KEYS)])))
    return g + 1, blocks.write(g, sums)

  blocks = tf.TensorArray(tf.float64, size=num_groups, infer_shape=False, element_shape=[None, len(EVAL_KEYS)])
  _, blocks = tf.while_loop(lambda g, _: g < num_groups, group, (tf.constant(0), blocks))
  return tf.cond(num_groups > 0, blocks.concat, lambda: tf.zeros([0, len(EVAL_KEYS)], tf.float64))


def _local_computation(model_fn, server_type, slot_type, weights_fn, kwargs) -> Callable:
  """`Evaluator.build_computation` for one slot, as a `tf.function` run in this process."""
  server_spec = tff.types.type_to_tf_tensor_specs(server_type)
  slot_spec = tff.types.type_to_tf_tensor_specs(slot_type)
  models = []

  def evaluate_slot(server_value, slot):
    if not models:  # Created inside the first trace, as `local_round.LocalRound` does (Keras v1/v2 classes).
      models.append(model_fn())
    model = models[0]
    return group_sums(model, slot, lambda g: weights_fn(model, server_value, slot, g), **kwargs)

  run = tf.function(evaluate_slot, input_signature=(server_spec, slot_spec), autograph=False)

  def call(server_value, slots):
    if len(slots) != 1:
      raise ValueError(f"runtime='local' evaluates one slot; got {len(slots)}.")
    slot = local_round.conform(slots[0], slot_spec)
    return [run(local_round.conform(server_value, server_spec), slot).numpy()]

  return call


def _data_specs(data_type):
  """TensorSpecs of a batch's x and y from the model's dataset type."""
  spec = tff.types.type_to_tf_tensor_specs(data_type.element)
  return (spec['x'], spec['y']) if isinstance(spec, Mapping) else (spec[0], spec[1])


class _Population:
  """Every client's eval rows concatenated (x_all, y_all), with row offsets; `rows(ids)` gathers a list of them."""

  def __init__(self, eval_arrays: Mapping[str, tuple], x_dtype, y_dtype):
    self.flat = eval_arrays if hasattr(eval_arrays, 'row_index') else None  # A FlatSplit: gathered on demand.
    if self.flat is not None:
      self.ids, self.counts, self._dtypes = self.flat.ids, self.flat.counts, (x_dtype, y_dtype)
      return
    self.ids = list(eval_arrays)
    self.position = {c: i for i, c in enumerate(self.ids)}
    xs = [np.asarray(eval_arrays[c][0], x_dtype) for c in self.ids]
    ys = [np.asarray(eval_arrays[c][1], y_dtype) for c in self.ids]
    self.counts = np.array([len(y) for y in ys], np.int64)
    if any(len(x) != len(y) for x, y in zip(xs, ys)):
      raise ValueError('eval_arrays must map each client id to (x, y) with as many rows of x as of y.')
    self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
    self.x_all, self.y_all = np.concatenate(xs), np.concatenate(ys)

  def positions(self, client_ids: Sequence[str]) -> np.ndarray:
    if self.flat is not None:
      try:
        return self.flat.positions(client_ids)
      except KeyError as e:
        raise ValueError(f'client_ids without eval arrays: [{e}].') from None
    missing = [c for c in client_ids if c not in self.position]
    if missing:
      raise ValueError(f'client_ids without eval arrays: {missing[:5]}{" ..." if len(missing) > 5 else ""}.')
    return np.array([self.position[c] for c in client_ids], np.int64)

  def rows(self, pos: np.ndarray):
    """(x, y, counts) of the clients at positions `pos`, in that order (a view when they are contiguous)."""
    if self.flat is not None:
      x, y, counts = self.flat.rows(pos)
      return np.asarray(x, self._dtypes[0]), np.asarray(y, self._dtypes[1]), counts
    counts = self.counts[pos]
    if len(pos) and np.array_equal(pos, np.arange(pos[0], pos[0] + len(pos))):
      lo, hi = self.offsets[pos[0]], self.offsets[pos[-1] + 1]
      return self.x_all[lo:hi], self.y_all[lo:hi], counts
    index = np.repeat(self.offsets[pos] - (np.cumsum(counts) - counts), counts)
    index += np.arange(index.size)
    return self.x_all[index], self.y_all[index], counts


def _group_layout(counts: np.ndarray, groups: np.ndarray) -> collections.OrderedDict:
  """segment / group_rows / group_clients of clients with row `counts` cut into groups of `groups` clients."""
  first = np.repeat(np.cumsum(groups) - groups, groups)  # Each client's group's first client.
  bounds = np.concatenate([[0], np.cumsum(counts)])
  group_bounds = bounds[np.concatenate([[0], np.cumsum(groups)])]
  return collections.OrderedDict(
      segment=np.repeat(np.arange(len(counts)) - first, counts).astype(np.int32),
      group_rows=np.diff(group_bounds).astype(np.int32), group_clients=np.asarray(groups, np.int32))


class Evaluator:
  """Packed per-client evaluation of one model on fixed eval arrays (module docstring). Computations are traced
  on first use and reused; every call returns one OrderedDict of float sums per client, in `client_ids` order."""

  def __init__(self, model_fn, eval_arrays: Mapping[str, tuple], *, pad_id: Optional[int] = None,
               batch_size: int = DEFAULT_BATCH_SIZE, num_slots: int = 1,
               per_example_loss: Optional[PerExampleLoss] = None, runtime: Optional[str] = None):
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1; got {batch_size}.')
    packing.split(1, num_slots)
    self.runtime = process_lib.resolve_runtime(runtime, num_slots)
    if not eval_arrays:
      raise ValueError('eval_arrays must hold at least one client.')
    self.model_fn, self.pad_id, self.batch_size, self.num_slots = model_fn, pad_id, batch_size, num_slots
    self.loss_fn = per_example_loss or cross_entropy
    self.weights_type, data_type, _ = model_types_lib.model_types(model_fn)
    self.x_spec, self.y_spec = _data_specs(data_type)
    self.population = _Population(eval_arrays, self.x_spec.dtype.as_numpy_dtype, self.y_spec.dtype.as_numpy_dtype)
    self.client_ids = self.population.ids
    self._computations = {}

  # Types and computations ----------------------------------------------------------------------------------------
  def _rows_type(self, spec):
    return tff.TensorType(spec.dtype.as_numpy_dtype, [None] + spec.shape.as_list()[1:])

  def slot_type(self, **extra) -> tff.StructType:
    """TFF type of one slot: the module docstring's layout plus `extra` fields (name -> TFF type)."""
    i32 = tff.TensorType(np.int32, [None])
    fields = [('x', self._rows_type(self.x_spec)), ('y', self._rows_type(self.y_spec)), ('segment', i32),
              ('group_rows', i32), ('group_clients', i32)] + list(extra.items())
    return tff.StructWithPythonType(fields, collections.OrderedDict)

  def build_computation(self, server_type, slot_type, weights_fn) -> tff.Computation:
    """(server value@SERVER, slots@CLIENTS) -> float64[K, 4]@CLIENTS; `weights_fn(model, server_value, slot, g)`
    gives group g's ModelWeights inside the slot's TF call. With `runtime='local'`, the same TF call in this
    process: (server value, [slot]) -> [float64[K, 4]]."""
    model_fn, kwargs = self.model_fn, dict(batch_size=self.batch_size, pad_id=self.pad_id, loss_fn=self.loss_fn)
    if self.runtime == 'local':
      return _local_computation(model_fn, server_type, slot_type, weights_fn, kwargs)

    @tff.tensorflow.computation(server_type, slot_type)
    def evaluate_slot(server_value, slot):
      model = model_fn()

      @tf.function(autograph=False)
      def run():
        return group_sums(model, slot, lambda g: weights_fn(model, server_value, slot, g), **kwargs)

      return run()

    @tff.federated_computation(tff.FederatedType(server_type, tff.SERVER), tff.FederatedType(slot_type, tff.CLIENTS))
    def evaluate(server_value, slots):
      return tff.federated_map(evaluate_slot, (tff.federated_broadcast(server_value), slots))

    return evaluate

  def computation(self, key, build: Callable[[], tff.Computation]) -> tff.Computation:
    if key not in self._computations:
      self._computations[key] = build()
    return self._computations[key]

  # Running -------------------------------------------------------------------------------------------------------
  def run(self, computation, server_value, client_ids: Sequence[str], *, groups_fn=None, slot_fields=None) -> list:
    """Packs `client_ids` into `num_slots` slots and runs `computation`. `groups_fn(ids)` -> group sizes of a
    slot's clients (default: one group); `slot_fields(slice)` -> extra fields of the slot holding client_ids[slice]."""
    pos = self.population.positions(client_ids)
    slots = []
    for s in packing.split(len(client_ids), self.num_slots):
      x, y, counts = self.population.rows(pos[s])
      groups = groups_fn(client_ids[s]) if groups_fn else np.array([len(counts)] * bool(len(counts)), np.int64)
      slot = collections.OrderedDict(x=x, y=y, **_group_layout(counts, np.asarray(groups, np.int64)))
      slot.update(slot_fields(s) if slot_fields else {})
      slots.append(slot)
    sums = np.concatenate([np.asarray(r, np.float64).reshape(-1, len(EVAL_KEYS)) for r in
                           computation(server_value, slots)])
    return [collections.OrderedDict(zip(EVAL_KEYS, map(float, row))) for row in sums]

  def _ids(self, client_ids):
    return list(self.client_ids if client_ids is None else client_ids)

  def __call__(self, weights, client_ids: Optional[Sequence[str]] = None) -> list:
    """Per-client sums of the broadcast `weights` (ModelWeights) on each client's eval rows."""
    comp = self.computation('global', lambda: self.build_computation(
        self.weights_type, self.slot_type(), lambda model, weights, slot, g: weights))
    return self.run(comp, weights, self._ids(client_ids))

  def evaluate_models(self, models: Sequence, model_of: Sequence[int],
                      client_ids: Optional[Sequence[str]] = None) -> list:
    """Per-client sums where client i (of `client_ids`, default all) evaluates `models[model_of[i]]` (ModelWeights;
    e.g. its cluster's model). Clients are grouped by model: one weight assignment per model and slot."""
    ids = self._ids(client_ids)
    model_of = np.asarray(model_of, np.int64).reshape(-1)
    if len(model_of) != len(ids) or (len(ids) and not 0 <= model_of.min() <= model_of.max() < len(models)):
      raise ValueError(f'model_of must give one index in [0, {len(models)}) per client; got {len(model_of)} for '
                       f'{len(ids)} clients.')
    order = np.argsort(model_of, kind='stable')
    sorted_ids, sorted_models = [ids[i] for i in order], model_of[order]
    model_index = dict(zip(sorted_ids, sorted_models))

    def runs(slot_ids):  # Consecutive clients of one model form a group.
      m = np.array([model_index[c] for c in slot_ids], np.int64)
      starts = np.flatnonzero(np.concatenate([[True], m[1:] != m[:-1]])) if len(m) else np.zeros([0], np.int64)
      return np.diff(np.concatenate([starts, [len(m)]]))

    def group_model(s):
      sizes = runs(sorted_ids[s])
      return dict(group_model=sorted_models[s][np.cumsum(sizes) - sizes].astype(np.int32))

    stacked = tf.nest.map_structure(lambda *ws: np.stack([np.asarray(w) for w in ws]), *models)
    stacked_type = tff.types.tensorflow_to_type(tf.nest.map_structure(
        lambda t: tf.TensorSpec([None] + list(t.shape), t.dtype), tff.types.type_to_tf_tensor_specs(self.weights_type)))
    pick = lambda model, stacked, slot, g: tf.nest.map_structure(lambda t: t[slot['group_model'][g]], stacked)
    comp = self.computation('models', lambda: self.build_computation(
        stacked_type, self.slot_type(group_model=tff.TensorType(np.int32, [None])), pick))
    results = self.run(comp, stacked, sorted_ids, groups_fn=runs, slot_fields=group_model)
    out = [None] * len(ids)
    for i, r in zip(order, results):
      out[i] = r
    return out

  def evaluate_personal(self, weights, parts, states: np.ndarray, client_ids: Sequence[str]) -> list:
    """Per-client sums of `parts.algorithm.personal_weights(weights, state)` (the global weights where it returns
    None); `parts`: the engine's `RoundParts`; `states`: float32[K, state_dim] flattened client states."""
    ids = list(client_ids)
    states = np.asarray(states, np.float32).reshape(len(ids), parts.state_dim)

    def personal(model, weights, slot, g):
      own = parts.algorithm.personal_weights(weights, parts.client_state_struct(slot['state'][g]))
      return weights if own is None else own

    comp = self.computation(('personal', parts), lambda: self.build_computation(
        self.weights_type, self.slot_type(state=tff.TensorType(np.float32, [None, parts.state_dim])), personal))
    return self.run(comp, weights, ids, groups_fn=lambda c: np.ones(len(c), np.int64),
                    slot_fields=lambda s: dict(state=states[s]))

  def evaluate_finetuned(self, weights, train_rows: Callable[[str], tuple], optimizer, *, batch_size: int,
                         client_ids: Sequence[str]) -> list:
    """Per-client sums after each client fine-tunes `weights` with `local_training.train` (uniform weighting) on
    its `train_rows(client_id)` = (x, y) in training order (epochs included), in batches of `batch_size`."""
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1; got {batch_size}.')
    ids = list(client_ids)
    x_dtype, y_dtype = self.x_spec.dtype.as_numpy_dtype, self.y_spec.dtype.as_numpy_dtype
    empty_x = np.zeros([0] + self.x_spec.shape.as_list()[1:], x_dtype)
    empty_y = np.zeros([0] + self.y_spec.shape.as_list()[1:], y_dtype)

    def train_fields(s):
      rows = [train_rows(c) for c in ids[s]]
      return collections.OrderedDict(
          train_x=np.concatenate([np.asarray(x, x_dtype) for x, _ in rows]) if rows else empty_x,
          train_y=np.concatenate([np.asarray(y, y_dtype) for _, y in rows]) if rows else empty_y,
          train_start=np.cumsum([0] + [len(y) for _, y in rows])[:-1].astype(np.int32),
          train_rows=np.array([len(y) for _, y in rows], np.int32))

    def tuned(model, weights, slot, g):
      lo, n = slot['train_start'][g], slot['train_rows'][g]
      data = packing.TensorBatches(collections.OrderedDict(x=slot['train_x'][lo:lo + n],
                                                           y=slot['train_y'][lo:lo + n]), n, batch_size)
      result = local_training.train(model, optimizer, weights, data,
                                    weighting=tff.learning.ClientWeighting.UNIFORM)
      return local_training.trained_weights(weights, result)

    fields = dict(train_x=self._rows_type(self.x_spec), train_y=self._rows_type(self.y_spec),
                  train_start=tff.TensorType(np.int32, [None]), train_rows=tff.TensorType(np.int32, [None]))
    comp = self.computation(('finetune', optimizer, batch_size), lambda: self.build_computation(
        self.weights_type, self.slot_type(**fields), tuned))
    return self.run(comp, weights, ids, groups_fn=lambda c: np.ones(len(c), np.int64), slot_fields=train_fields)


def build_evaluator(task_or_model_fn, eval_arrays: Optional[Mapping[str, tuple]] = None,
                    pad_id: Optional[int] = None, **kwargs) -> Evaluator:
  """`Evaluator` for a `tff_fl.tasks.Task` (its model, pad id and, by default, its test split) or for a `model_fn`
  with `eval_arrays` (client id -> (x [n, ...], y [n, ...])). kwargs: batch_size, num_slots, per_example_loss, runtime."""
  if not hasattr(task_or_model_fn, 'model_fn'):
    if eval_arrays is None:
      raise ValueError('build_evaluator(model_fn, ...) needs eval_arrays (client id -> (x, y)).')
    return Evaluator(task_or_model_fn, eval_arrays, pad_id=pad_id, **kwargs)
  task = task_or_model_fn
  pad_id = getattr(task, 'pad_id', None) if pad_id is None else pad_id
  return Evaluator(task.model_fn, task.data.test if eval_arrays is None else eval_arrays, pad_id=pad_id, **kwargs)


def accuracies(client_ids: Sequence[str], results: Sequence[Mapping]) -> dict:
  """{client id: correct / num_predictions, or None for a client without predictions}."""
  return {c: (r['correct'] / r['num_predictions'] if r['num_predictions'] > 0 else None)
          for c, r in zip(client_ids, results)}


_TASK_EVALUATORS = {}  # id(task) -> (weakref to the task, {id(eval_arrays): (eval_arrays, Evaluator)})


def task_evaluator(task, eval_arrays: Optional[Mapping[str, tuple]] = None) -> Evaluator:
  """The `build_evaluator(task, eval_arrays)` of this task object, built once (its computations are reused)."""
  for key in [k for k, (ref, _) in _TASK_EVALUATORS.items() if ref() is None]:
    del _TASK_EVALUATORS[key]
  ref, cache = _TASK_EVALUATORS.get(id(task), (None, None))
  if ref is None or ref() is not task:
    ref, cache = weakref.ref(task), {}
    _TASK_EVALUATORS[id(task)] = (ref, cache)
  arrays = task.data.test if eval_arrays is None else eval_arrays
  if id(arrays) not in cache:
    cache[id(arrays)] = (arrays, build_evaluator(task, arrays))
  return cache[id(arrays)][1]


def _chunks(ids: list, costs: Sequence[int], budget: int) -> list:
  """Consecutive chunks of `ids` whose summed `costs` stay <= `budget` (a single client may exceed it)."""
  chunks, size = [], budget + 1
  for cid, cost in zip(ids, costs):
    if size + cost > budget:
      chunks.append([])
      size = 0
    chunks[-1].append(cid)
    size += cost
  return chunks


def _deploys_personal_model(parts, weights_type) -> bool:
  """Whether `parts.algorithm.personal_weights` returns a model (not None), traced once on zeros (wrappers such as
  top-k EF delegate to the algorithm they wrap)."""
  with tf.Graph().as_default():
    specs = tff.types.type_to_tf_tensor_specs(weights_type)
    weights = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), specs)
    state = parts.client_state_struct(tf.zeros([parts.state_dim], tf.float32))
    return parts.algorithm.personal_weights(weights, state) is not None


def client_accuracies(task, weights, client_ids: Optional[Sequence[str]] = None, *,
                      eval_arrays: Optional[Mapping[str, tuple]] = None) -> dict:
  """{client id: accuracy of the global `weights` on its eval data, or None}; default all the task's clients."""
  ids = list(task.client_ids if client_ids is None else client_ids)
  return accuracies(ids, task_evaluator(task, eval_arrays)(weights, ids))


def personal_accuracies(process, state, task, client_ids: Optional[Sequence[str]] = None, *,
                        eval_arrays: Optional[Mapping[str, tuple]] = None,
                        max_state_bytes: int = STATE_BYTES_PER_CALL) -> dict:
  """{client id: accuracy of its personal model}: `process.parts.algorithm.personal_weights(global weights, its
  state)` with its state from `process.client_states` (a never-seen client's initial state); the global model for
  algorithms without personal models (or processes without `parts`). States go in calls of <= max_state_bytes."""
  ids = list(task.client_ids if client_ids is None else client_ids)
  weights = process.get_model_weights(state)
  parts = getattr(process, 'parts', None)
  evaluator = task_evaluator(task, eval_arrays)
  if parts is None or not _deploys_personal_model(parts, evaluator.weights_type):
    return accuracies(ids, evaluator(weights, ids))
  out = {}
  for chunk in _chunks(ids, [4 * parts.state_dim] * len(ids), max_state_bytes):
    out.update(accuracies(chunk, evaluator.evaluate_personal(weights, parts, process.client_states(chunk), chunk)))
  return out


def finetuned_accuracies(task, weights, client_optimizer, *, epochs: int, batch_size: int, seed: int,
                         client_ids: Optional[Sequence[str]] = None,
                         eval_arrays: Optional[Mapping[str, tuple]] = None,
                         max_train_bytes: int = TRAIN_BYTES_PER_CALL) -> dict:
  """{client id: accuracy after fine-tuning the global `weights` for `epochs` local epochs on its train data}
  (`local_training.train`, batches of `batch_size` in `task.train_order(..., seed=seed, round_num=0)` order), then
  evaluating on its eval data. Clients go in calls of <= max_train_bytes of packed training rows."""
  if epochs < 1:
    raise ValueError(f'epochs must be >= 1; got {epochs}.')
  ids = list(task.client_ids if client_ids is None else client_ids)
  evaluator = task_evaluator(task, eval_arrays)

  def train_rows(cid):
    x, y = task.data.train[cid]
    order = task.train_order(cid, epochs=epochs, seed=seed, round_num=0)
    return x[order], y[order]

  out = {}
  for chunk in _chunks(ids, [epochs * sum(a.nbytes for a in task.data.train[c]) for c in ids], max_train_bytes):
    out.update(accuracies(chunk, evaluator.evaluate_finetuned(weights, train_rows, client_optimizer,
                                                              batch_size=batch_size, client_ids=chunk)))
  return out


def summarize(client_ids, results) -> collections.OrderedDict:
  """Global (example-weighted) loss and accuracy, and the per-client accuracy distribution."""
  rows = [(cid, r) for cid, r in zip(client_ids, results) if r['num_examples'] > 0 and r['num_predictions'] > 0]
  if not rows:
    raise ValueError('No client has evaluation data; use test_fraction > 0.')
  n = np.array([r['num_examples'] for _, r in rows], np.float64)
  preds = np.array([r['num_predictions'] for _, r in rows], np.float64)
  acc = np.array([r['correct'] for _, r in rows], np.float64) / preds
  loss = np.array([r['loss_sum'] for _, r in rows], np.float64)
  summary = collections.OrderedDict(
      eval_loss=float(loss.sum() / n.sum()),
      eval_accuracy=float(np.sum(acc * preds) / preds.sum()),
      eval_clients=len(rows))
  for name, value in (('mean', acc.mean()), ('min', acc.min()), ('p10', np.percentile(acc, 10)),
                      ('p50', np.percentile(acc, 50)), ('p90', np.percentile(acc, 90))):
    summary[f'client_accuracy_{name}'] = float(value)
  summary['per_client_accuracy'] = collections.OrderedDict((cid, float(a)) for (cid, _), a in zip(rows, acc))
  return summary
