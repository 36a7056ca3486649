"""A CLIENTS slot's clients trained in one TF call: sequentially, or together on a client axis.

Both forms give, per slot: the aggregator's accumulator over the slot's clients (each client's update passed
through the aggregator's client part, in client order: clipping / DP / robust statistics / weighting stay per real
client), the sum of the uploads, the model's unfinalized metrics, per-client arrays (loss [C], num_examples [C],
state float32[C, S], <extension>__<measurement> [C]) and the aggregate-pass vectors.

* `train_sequential`: a `tf.while_loop` over clients on the Keras `VariableModel` (any model).
* `train_vectorized`: every client's `algorithm.client_update` mapped over the client axis with `tf.vectorized_map`
  (FedJAX's `for_each_client`) on the model's functional form (`tff_fl.models.functional`), while local training
  runs outside the map on stacked weights (`tff_fl.algorithms.client_axis`: batched matmuls; the first local step,
  where every client starts from the broadcast weights, is one matmul over the whole cohort; later steps only on
  the clients that have them; a client's last batch padded and masked, `packing.padded_batch`). The aggregator's
  client part then runs per client, as in the sequential form.

`client_axis_reason(...)` says why a round cannot run on the client axis ('' when it can); the round falls back
to the sequential form and logs the reason.
"""

import collections
from typing import Optional, Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.aggregators import flat
from tff_fl.algorithms import client_axis
from tff_fl.algorithms import definition
from tff_fl.algorithms import extension as extension_lib
from tff_fl.algorithms import local_training
from tff_fl.engine import packing
from tff_fl.models import functional

PLACEHOLDER = 0.0  # Stands for an empty extra / extension state / upload (TFF values must not be empty structs).
VECTOR = '__vector__'  # Prefix of the aggregate-pass vectors among a slot's per-client arrays.


def nonempty(value):
  return tf.constant(PLACEHOLDER, tf.float32) if not tf.nest.flatten(value) else value


def field_key(ext_name: str, field: str) -> str:
  return f'{ext_name}__{field}'


def field_specs(extensions: Sequence[extension_lib.Extension]) -> collections.OrderedDict:
  """Packed per-client fields of all extensions, keyed `<extension>__<field>`."""
  return collections.OrderedDict((field_key(e.name, k), s) for e in extensions for k, s in e.field_specs().items())


def client_axis_reason(algorithm, extensions, model_fn,
                       required: bool = False) -> tuple[Optional[functional.FunctionalModel], str]:
  """(the functional model, '') if the round's clients should run on a client axis, else (None, why not).
  Convolutional models run sequentially unless `required`: per-client filters make the axis's convolution a
  grouped convolution over the clients' channels, measured at 0.93x the time of sequential clients (README), too
  little gain for a default."""
  wrapped = [algorithm]  # A wrapper (e.g. top-k error feedback) runs its inner algorithm's client update.
  while isinstance(getattr(wrapped[-1], 'inner', None), definition.Algorithm):
    wrapped.append(wrapped[-1].inner)
  for part in wrapped + list(extensions):
    if not part.client_axis:
      return None, f'{type(part).__name__} runs its clients one at a time ({part.client_axis_note})'
  with tf.Graph().as_default():
    try:
      model = functional.from_model(model_fn())
    except functional.Unsupported as e:
      return None, f'the model has no functional form: {e}'
  for part in extensions:
    limit = part.client_axis_limit(model)
    if limit:
      return None, limit
  if 'Conv2D' in model.layer_kinds and not required:
    return None, 'convolutions with per-client filters are faster one client at a time'
  return model, ''


def _local_options(extensions, bcast, infos) -> local_training.LocalOptions:
  options = local_training.LocalOptions()
  for e in extensions:
    if e.has('local_options'):
      options = options.merge(e.local_options(bcast[e.name], infos[e.name]))
  return options


def _per_client_shapes(fns) -> collections.OrderedDict:
  shapes = collections.OrderedDict(loss=[], num_examples=[], state=[fns.parts.state_dim])
  for e in fns.measured:
    for k in e.measurement_names():
      shapes[field_key(e.name, k)] = []
  shapes.update((VECTOR + e.name, [fns.vector_sizes[e.name]]) for e in fns.vectored)
  return shapes


def _client_result(fns, ctx, infos, bcast):
  """One client's update (through the upload transforms), aggregator weight, upload and per-client values."""
  parts = fns.parts
  out = parts.algorithm.client_update(ctx)
  update = out['update']
  for e in parts.extensions:
    update = e.transform_update(update, infos[e.name], bcast[e.name])
  weight = out['update_weight']
  if fns.agg_input is not None:  # The extension's fields travel with the weight (Extension.aggregator_input).
    weight = collections.OrderedDict(
        weight=weight, **{fns.agg_input.name: collections.OrderedDict(
            (k, v) for k, v in infos[fns.agg_input.name].items() if k != 'seed')})
  state = flat.flatten_value(out['state']) if parts.stateful else tf.zeros([0], tf.float32)
  values = collections.OrderedDict(loss=out['loss'], num_examples=out['num_examples'], state=state)
  for e in fns.measured:
    for k, v in e.client_measurements(ctx, out, infos[e.name]).items():
      values[field_key(e.name, k)] = tf.cast(v, tf.float32)
  for e in fns.vectored:
    values[VECTOR + e.name] = tf.ensure_shape(
        tf.cast(e.client_vector(ctx, out, update, infos[e.name]), tf.float32), [fns.vector_sizes[e.name]])
  return update, weight, nonempty(out['upload']), values


def _client_inputs(fns, slot, ext_bcast, client):
  """(infos, bcast, transform, options) of one client; `client(t)` picks its row of a slot tensor t."""
  extensions = fns.parts.extensions
  infos = {}
  for e in extensions:
    infos[e.name] = collections.OrderedDict((k, client(slot['info'][field_key(e.name, k)])) for k in e.field_specs())
    infos[e.name]['seed'] = client(slot['seed'])
  bcast = {e.name: ext_bcast[e.name] for e in extensions}

  def transform(batch, offset):
    for e in extensions:
      batch = e.transform_batch(batch, infos[e.name], bcast[e.name], offset)
    return batch

  transform = transform if any(e.has('transform_batch') for e in extensions) else None
  return infos, bcast, transform, _local_options(extensions, bcast, infos)


def _outputs(fns, model, acc, upload, arrays):
  per_client = collections.OrderedDict((k, v) for k, v in arrays.items() if not k.startswith(VECTOR))
  metrics = model.report_local_unfinalized_metrics()
  if not fns.vectored:
    return acc, upload, metrics, per_client
  return acc, upload, metrics, per_client, collections.OrderedDict(
      (e.name, arrays[VECTOR + e.name]) for e in fns.vectored)


def _accumulate(fns, client_input, updates, weights, num):
  """The aggregator's client part over clients 0..num-1 in order (`updates`/`weights` stacked on a client axis)."""
  agg = fns.agg
  carry = agg.fold_start(num)

  def body(c, carry):
    pick = lambda t: t[c]
    return c + 1, agg.fold_add(carry, c, tf.nest.map_structure(pick, updates),
                               tf.nest.map_structure(pick, weights), client_input)

  return agg.fold_end(tf.while_loop(lambda c, _: c < num, body, (tf.constant(0), carry),
                                    shape_invariants=(tf.TensorShape([]), agg.fold_invariants(carry)))[1])


def train_sequential(fns, model, weights, extra, ext_bcast, client_input, slot):
  """The slot's clients in turn on `model` (a `VariableModel` whose metrics start at zero); see module docstring."""
  parts, agg = fns.parts, fns.agg
  num = tf.shape(slot['n'])[0]

  def body(c, acc, upload_acc, arrays):
    infos, bcast, transform, options = _client_inputs(fns, slot, ext_bcast, lambda t: t[c])
    rows = collections.OrderedDict((k, slot[k][c]) for k in ('x', 'y'))
    data = packing.TensorBatches(rows, slot['n'][c], fns.batch_size, transform, order=slot['order'][c])
    ctx = definition.ClientContext(model, weights, extra, parts.client_state_struct(slot['state'][c]), data,
                                   fns.client_optimizer, fns.client_weighting, options)
    update, weight, upload, values = _client_result(fns, ctx, infos, bcast)
    acc = agg.fold_add(acc, c, update, weight, client_input)
    upload_acc = tf.nest.map_structure(tf.add, upload_acc, upload)
    arrays = collections.OrderedDict((k, arrays[k].write(c, values[k])) for k in arrays)
    return c + 1, acc, upload_acc, arrays

  arrays = collections.OrderedDict(
      (k, tf.TensorArray(tf.float32, size=num, element_shape=s)) for k, s in _per_client_shapes(fns).items())
  zero_upload = tf.nest.map_structure(lambda t: tf.zeros(t.shape, t.dtype),
                                      tff.types.type_to_tf_tensor_specs(parts.upload_type))
  carry = agg.fold_start(num)
  invariants = (tf.TensorShape([]), agg.fold_invariants(carry),
                tf.nest.map_structure(lambda t: t.shape, zero_upload),
                collections.OrderedDict((k, tf.TensorShape([])) for k in arrays))
  _, acc, upload, arrays = tf.while_loop(lambda c, *_: c < num, body,
                                         (tf.constant(0), carry, zero_upload, arrays),
                                         shape_invariants=invariants)
  arrays = collections.OrderedDict((k, a.stack()) for k, a in arrays.items())
  return _outputs(fns, model, agg.fold_end(acc), upload, arrays)


def train_vectorized(fns, model, functional_model, weights, extra, ext_bcast, client_input, slot):
  """The slot's clients together on a client axis (module docstring); `model` receives the metric sums."""
  parts = fns.parts
  num = tf.shape(slot['n'])[0]
  batch = fns.batch_size
  clients = collections.OrderedDict((k, slot[k]) for k in ('x', 'y', 'n', 'order', 'seed', 'state', 'info'))
  # An empty slot gets one client without examples (tf.vectorized_map cannot map over 0); outputs are cut to `num`.
  # A slot of a known nonzero size needs no padding: its size then stays static, and `tf.vectorized_map`'s gather
  # of each client's row is the identity instead of a copy of every stacked input.
  pad = lambda t: tf.concat([t, tf.zeros(tf.concat([[1], tf.shape(t)[1:]], 0), t.dtype)], 0)
  if not clients['n'].shape[0]:
    clients = tf.nest.map_structure(lambda t: tf.cond(num > 0, lambda: t, lambda: pad(t)), clients)
  client_steps = (clients['n'] + batch - 1) // batch

  def batch_fn(client, i):
    _, _, transform, _ = _client_inputs(fns, client, ext_bcast, lambda t: t)
    rows = collections.OrderedDict((k, client[k]) for k in ('x', 'y'))
    return packing.padded_batch(rows, client['n'], batch, i, order=client['order'], transform=transform)

  results, increments = [], []  # Per `ctx.train` call: its results stacked on the client axis (client_axis docs).
  while True:
    recording = []  # Per traced client function: the (Call, args) of its first train call without a result.

    def client(inputs, known=len(results)):
      infos, bcast, _, options = _client_inputs(fns, inputs['client'], ext_bcast, lambda t: t)
      axis_model = client_axis.ClientAxisModel(functional_model, weights, inputs['results'][:known])
      ctx = definition.ClientContext(axis_model, weights, extra, parts.client_state_struct(inputs['client']['state']),
                                     None, fns.client_optimizer, fns.client_weighting, options)
      outputs = _client_result(fns, ctx, infos, bcast)
      recording.append(axis_model.recorded[0] if axis_model.recorded else None)
      return axis_model.recorded[1] if axis_model.recorded else outputs

    outputs = tf.vectorized_map(client, dict(client=clients, results=list(results)))
    if recording[-1] is None:
      break
    stage_results, stage_increments = client_axis.train_stacked(functional_model, recording[-1], outputs, weights,
                                                                clients, client_steps, batch_fn)
    results.append(stage_results)
    increments.append(stage_increments)
  updates, weights_, uploads, values = outputs
  acc = _accumulate(fns, client_input, updates, weights_, num)
  upload = tf.nest.map_structure(lambda t: tf.reduce_sum(t[:num], axis=0), uploads)
  variables = [v for m in model.get_metrics() for v in m.variables]
  adds = [v.assign_add(tf.add_n([i[j] for i in increments if i])) for j, v in enumerate(variables)
          if any(increments)]
  with tf.control_dependencies(adds):
    values = tf.nest.map_structure(lambda t: t[:num], values)
  shapes = _per_client_shapes(fns)
  arrays = collections.OrderedDict((k, tf.ensure_shape(tf.reshape(values[k], [num] + list(s)), [None] + list(s)))
                                   for k, s in shapes.items())
  return _outputs(fns, model, acc, upload, arrays)
