"""The one round builder: any `Algorithm` + extensions + any `tff.aggregators` factory -> one federated round.

  next(state@SERVER, slots@CLIENTS) -> (state@SERVER, metrics@SERVER, per_client@CLIENTS)

A CLIENTS slot holds a group of real clients packed as tensors (`packing.Packer`). In one TF call a slot runs, for
each of its clients in turn: the extensions' batch transforms and local options, `algorithm.client_update` (the one
local-training loop), the extensions' upload transforms, and the aggregator's client part for that client
(`aggregation.ClientAxisAggregation`: TFF's MapReduceForm of the aggregator, so clipping / DP / robust statistics
and weighting stay per real client); uploads are summed. Slots merge with `federated_aggregate`; the server runs
the aggregator's server part, the extensions' aggregate transforms, `algorithm.to_server_delta`, the finalizer
(TFF's apply-optimizer finalizer: FedOpt), `algorithm.server_update` and the extensions' `server_post`.

Extensions with an aggregate pass (`Extension.client_vector`) keep one vector per client at CLIENTS; after
aggregation the round broadcasts the aggregate and the cohort mean of those vectors and maps
`aggregate_measurements` over the clients (a second federated_map after a broadcast of the aggregate: not a
MapReduceForm, but TFF's multi-worker mergeable form still splits it, since nothing is aggregated after the
broadcast). Rounds without such extensions are unchanged.

State: OrderedDict(model=ModelWeights, extra=<algorithm extra>, extensions=OrderedDict(name=<state>),
aggregator=<state>, finalizer=<optimizer state>). Metrics: OrderedDict(client_work=OrderedDict(train=...),
aggregator=..., finalizer=..., <extension name>=... for extensions with server measurements). per_client (one
OrderedDict per slot): loss [C], num_examples [C], state float32[C, S] (the clients' new flattened states),
<extension>__<measurement> [C].
"""

import collections
from typing import Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.aggregators import flat
from tff_fl.algorithms import definition
from tff_fl.algorithms import extension as extension_lib
from tff_fl.algorithms import model_types as model_types_lib
from tff_fl.engine import aggregation as aggregation_lib
from tff_fl.engine import slot_training
from tff_fl.models import functional

PLACEHOLDER, nonempty = slot_training.PLACEHOLDER, slot_training.nonempty
field_key, field_specs = slot_training.field_key, slot_training.field_specs


class RoundParts:
  """Types and TF pieces derived from an algorithm + model (shared by the round and the client-state store)."""

  def __init__(self, algorithm: definition.Algorithm, model_fn, extensions=()):
    self.algorithm, self.model_fn, self.extensions = algorithm, model_fn, list(extensions)
    names = [e.name for e in self.extensions]
    if len(set(names)) != len(names):
      raise ValueError(f'extensions must have distinct names; got {names}.')
    self.weights_type, self.sequence_type, self.finalizers = model_types_lib.model_types(model_fn)
    self.initial_weights = model_types_lib.initial_weights_computation(model_fn)

    @tff.tensorflow.computation()
    def initial_extra():
      return nonempty(algorithm.server_extra(model_fn()))

    @tff.tensorflow.computation()
    def initial_extension_states():
      model = model_fn()
      return collections.OrderedDict((e.name, nonempty(e.server_init(model))) for e in self.extensions) or (
          tf.constant(PLACEHOLDER))

    @tff.tensorflow.computation()
    def initial_client_state():
      state = algorithm.client_state(model_fn())
      return tf.zeros([0], tf.float32) if state is None else state

    self.initial_extra, self.initial_extension_states = initial_extra, initial_extension_states
    self.client_state_type = initial_client_state.type_signature.result
    self.stateful = not (isinstance(self.client_state_type, tff.TensorType) and list(self.client_state_type.shape) == [0])
    self.state_dim = flat.flat_size(self.client_state_type) if self.stateful else 0

    @tff.tensorflow.computation()
    def initial_client_state_flat():
      state = algorithm.client_state(model_fn())
      return flat.flatten_value(state) if self.stateful else tf.zeros([0], tf.float32)

    self.initial_client_state = initial_client_state_flat  # -> float32[state_dim], a never-seen client's state.
    self.extra_type = initial_extra.type_signature.result
    self.extension_state_type = initial_extension_states.type_signature.result
    self._trace_client_update()

  def broadcast_computation(self):
    """TF computation: extension states -> what the extensions broadcast to clients."""
    return tff.tensorflow.computation(self.extension_broadcast, self.extension_state_type)

  def extension_broadcast(self, states):
    if not self.extensions:
      return tf.constant(PLACEHOLDER)
    return collections.OrderedDict((e.name, nonempty(e.broadcast(states[e.name]))) for e in self.extensions)

  def client_state_struct(self, vector):
    return flat.unflatten_value(vector, self.client_state_type) if self.stateful else None

  def _trace_client_update(self):
    """Types of the update and upload, from `client_update` on a tf.data dataset."""
    algorithm = self.algorithm

    @tff.tensorflow.computation(self.weights_type, self.extra_type, self.client_state_type, self.sequence_type)
    def trace(weights, extra, state, dataset):
      model = self.model_fn()
      ctx = definition.ClientContext(model, weights, extra, state if self.stateful else None, dataset,
                                     tff.learning.optimizers.build_sgdm(0.0), tff.learning.ClientWeighting.UNIFORM)
      out = tf.function(lambda: algorithm.client_update(ctx), autograph=False)()
      return collections.OrderedDict(update=out['update'], upload=nonempty(out['upload']))

    self.update_type = trace.type_signature.result['update']
    self.upload_type = trace.type_signature.result['upload']


class Round:
  """The round of `build_round`: `initialize` (federated computation -> state@SERVER), `functions` (its pieces as
  Python functions, run in one graph by `tff_fl.engine.local_round`) and `iterative_process`, the federated
  round (module docstring), built on first use: a round run in this process never needs it."""

  def __init__(self, functions: 'RoundFunctions', slot_type):
    self.functions, self.parts, self.slot_type = functions, functions.parts, slot_type
    self.initialize = _federated_init(functions)
    self._iterative_process = None

  @property
  def iterative_process(self) -> tff.templates.IterativeProcess:
    if self._iterative_process is None:
      self._iterative_process = _federated_round(self.functions, self.slot_type, self.initialize)
    return self._iterative_process


def build_round(algorithm: definition.Algorithm, model_fn, client_optimizer: tff.learning.optimizers.Optimizer,
                server_optimizer: Optional[tff.learning.optimizers.Optimizer], slot_type, *, batch_size: int,
                model_aggregator=None,
                client_weighting: tff.learning.ClientWeighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
                extensions: Sequence[extension_lib.Extension] = (),
                parts: Optional[RoundParts] = None, client_axis: Optional[bool] = None) -> Round:
  """The round (module docstring); `slot_type` from `Packer.slot_type()`. `client_axis`: run a slot's clients
  together on a client axis (`slot_training.train_vectorized`); None (default) = whenever the model, algorithm
  and extensions allow it (otherwise sequentially, with the reason logged), True = required (ValueError naming the
  reason otherwise), False = sequentially."""
  if not isinstance(client_optimizer, tff.learning.optimizers.Optimizer):
    raise TypeError(f'client_optimizer must be a tff.learning.optimizers.Optimizer; got {type(client_optimizer)}.')
  parts = parts or RoundParts(algorithm, model_fn, extensions)
  fns = RoundFunctions(parts, client_optimizer, server_optimizer, batch_size=batch_size,
                       model_aggregator=model_aggregator, client_weighting=client_weighting, client_axis=client_axis)
  return Round(fns, slot_type)


class RoundFunctions:
  """The round's pieces as Python functions called inside a TF graph, with the aggregator's MapReduceForm
  (`agg`), the finalizer (TFF's apply-optimizer finalizer) and the model's metric finalizers. The federated round
  wraps each function in a `tff.tensorflow.computation`; `tff_fl.engine.local_round` calls them in one graph."""

  def __init__(self, parts: RoundParts, client_optimizer, server_optimizer, *, batch_size: int, model_aggregator,
               client_weighting, client_axis: Optional[bool] = None):
    self.parts, self.client_optimizer, self.batch_size = parts, client_optimizer, batch_size
    self.client_weighting = client_weighting
    self.server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(
        learning_rate=parts.algorithm.default_server_learning_rate())
    self.agg_input = _aggregator_input(parts.extensions)
    aggregator = model_types_lib.build_model_aggregator(model_aggregator, parts.update_type,
                                                        _weight_type(self.agg_input))
    self.agg = aggregation_lib.ClientAxisAggregation(aggregator)
    self.finalizer = tff.learning.templates.build_apply_optimizer_finalizer(self.server_optimizer, parts.weights_type)
    self.measured = [e for e in parts.extensions if e.has('client_measurements')]
    self.posted = [e for e in parts.extensions if e.has('server_post')]
    self.vectored = [e for e in parts.extensions if e.has('client_vector')]
    self.vector_sizes = _vector_sizes(parts.model_fn, self.vectored, flat.flat_size(parts.update_type))
    self.client_axis_required = bool(client_axis)
    self.functional_model, reason = None, 'client_axis=False'
    if client_axis is not False:
      self.functional_model, reason = slot_training.client_axis_reason(parts.algorithm, parts.extensions,
                                                                       parts.model_fn, required=bool(client_axis))
    if client_axis and self.functional_model is None:
      raise ValueError(f'client_axis=True, but the clients cannot run on a client axis: {reason}.')
    self.client_execution = 'client axis' if self.functional_model is not None else f'sequential ({reason})'
    logging.info('Clients of a slot: %s.', self.client_execution)

  def train_slot(self, model, weights, extra, ext_bcast, client_input, slot):
    """One slot's clients on `model` (a fresh `model_fn()`: its metrics start at zero), on the client axis when
    the round allows it (`slot_training`) -> (accumulator, upload sum, unfinalized metrics, per-client
    arrays[, vectors])."""
    if self.functional_model is not None:
      try:
        return slot_training.train_vectorized(self, model, self.functional_model, weights, extra, ext_bcast,
                                              client_input, slot)
      except functional.Unsupported as e:  # Found while tracing the client update (e.g. its optimizer).
        if self.client_axis_required:
          raise ValueError(f'client_axis=True, but the clients cannot run on a client axis: {e}.') from None
        self.functional_model, self.client_execution = None, f'sequential ({e})'
        logging.info('Clients of a slot: %s.', self.client_execution)
    return slot_training.train_sequential(self, model, weights, extra, ext_bcast, client_input, slot)

  def server_delta(self, aggregate, ext_states):
    for e in self.parts.extensions:
      aggregate = e.transform_aggregate(aggregate, ext_states[e.name])
    return self.parts.algorithm.to_server_delta(aggregate)

  def server_update(self, weights, extra, upload_sum, ext_states):
    """-> (weights, extra, extension states, server measurements of the extensions' `server_post`)."""
    trainable, extra = self.parts.algorithm.server_update(weights.trainable, extra, upload_sum)
    weights = tff.learning.models.ModelWeights(trainable, weights.non_trainable)
    states = collections.OrderedDict((e.name, ext_states[e.name]) for e in self.parts.extensions)
    measurements = collections.OrderedDict()
    for e in self.posted:
      weights, states[e.name], measurements[e.name] = e.server_post(weights, ext_states[e.name])
      states[e.name] = nonempty(states[e.name])
    return weights, nonempty(extra), states or tf.constant(PLACEHOLDER), measurements or tf.constant(PLACEHOLDER)

  def finalize_metrics(self, sums, finalizers=None):
    """`finalizers` (default: the model's) on summed unfinalized metrics (as `sum_then_finalize`)."""
    finalizers = finalizers or self.parts.finalizers
    if callable(finalizers):
      return finalizers(sums)
    return collections.OrderedDict((k, f(sums[k])) for k, f in finalizers.items())

  # The aggregate pass (extensions with `client_vector`; module docstring).
  def vector_sums(self, vectors):
    count = tf.cast(tf.shape(vectors[self.vectored[0].name])[0], tf.float32)
    return collections.OrderedDict(sum=collections.OrderedDict(
        (k, tf.reduce_sum(v, axis=0)) for k, v in vectors.items()), count=count)

  def vector_means(self, total):
    return collections.OrderedDict((k, v / tf.maximum(total['count'], 1.0)) for k, v in total['sum'].items())

  def aggregate_measurements(self, per_client, vectors, means, aggregate):
    """`per_client` with every vectored extension's `aggregate_measurements` of each client added."""
    out = collections.OrderedDict(per_client)
    for e in self.vectored:
      names = list(e.aggregate_measurement_names())

      def one(vector, e=e, names=names):
        values = e.aggregate_measurements(vector, means[e.name], aggregate)
        return collections.OrderedDict((k, tf.cast(values[k], tf.float32)) for k in names)

      signature = collections.OrderedDict((k, tf.TensorSpec([], tf.float32)) for k in names)
      if vectors[e.name].shape[0]:  # A static nonzero client count: mapped at once (cannot map over 0 clients).
        values = tf.vectorized_map(one, vectors[e.name])
      else:
        values = tf.map_fn(one, vectors[e.name], fn_output_signature=signature)
      out.update((field_key(e.name, k), v) for k, v in values.items())
    return out


def _federated_init(fns: RoundFunctions) -> tff.Computation:
  parts = fns.parts

  @tff.federated_computation()
  def init_fn():
    return tff.federated_zip(collections.OrderedDict(
        model=tff.federated_eval(parts.initial_weights, tff.SERVER),
        extra=tff.federated_eval(parts.initial_extra, tff.SERVER),
        extensions=tff.federated_eval(parts.initial_extension_states, tff.SERVER),
        aggregator=fns.agg.initialize(), finalizer=fns.finalizer.initialize()))

  return init_fn


def _federated_round(fns: RoundFunctions, slot_type, init_fn: tff.Computation) -> tff.templates.IterativeProcess:
  parts, agg, finalizer = fns.parts, fns.agg, fns.finalizer
  metrics_fn = tff.learning.metrics.sum_then_finalize(parts.finalizers)
  broadcast_ext = parts.broadcast_computation()

  @tff.tensorflow.computation(parts.weights_type, parts.extra_type, broadcast_ext.type_signature.result,
                              agg.client_input_type, slot_type)
  def train_slot(weights, extra, ext_bcast, client_input, slot):
    model = parts.model_fn()
    # Autograph would rewrite TFF's graph import of the aggregator's pieces. The inputs are re-created inside the
    # function: `tf.vectorized_map` (the client axis) cannot convert ops of the enclosing graph.
    inside = lambda *args: tf.nest.map_structure(lambda t: tf.identity(t) if tf.is_tensor(t) else t, args)
    return tf.function(lambda: fns.train_slot(model, *inside(weights, extra, ext_bcast, client_input, slot)),
                       autograph=False)()

  server_delta = tff.tensorflow.computation(fns.server_delta, parts.update_type, parts.extension_state_type)
  server_update = tff.tensorflow.computation(fns.server_update, parts.weights_type, parts.extra_type,
                                             parts.upload_type, parts.extension_state_type)
  if fns.vectored:
    aggregate_pass = _federated_aggregate_pass(fns, train_slot.type_signature.result)

  @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(slot_type, tff.CLIENTS))
  def next_fn(state, slots):
    ext_bcast = tff.federated_broadcast(tff.federated_map(broadcast_ext, state.extensions))
    outputs = tff.federated_map(train_slot, (tff.federated_broadcast(state.model),
                                             tff.federated_broadcast(state.extra), ext_bcast,
                                             agg.broadcast_input(state.aggregator), slots))
    accumulators, uploads, metric_sums, per_client = outputs[0], outputs[1], outputs[2], outputs[3]
    agg_state, aggregate, agg_measurements = agg.finish(state.aggregator, accumulators)
    if fns.vectored:
      per_client = aggregate_pass(per_client, outputs[4], aggregate)
    delta = tff.federated_map(server_delta, (aggregate, state.extensions))
    fin = finalizer.next(state.finalizer, state.model, delta)
    new = tff.federated_map(server_update, (fin.result, state.extra, tff.federated_sum(uploads), state.extensions))
    new_state = tff.federated_zip(collections.OrderedDict(
        model=new[0], extra=new[1], extensions=new[2], aggregator=agg_state, finalizer=fin.state))
    metrics = collections.OrderedDict(
        client_work=tff.federated_zip(collections.OrderedDict(train=metrics_fn(metric_sums))),
        aggregator=agg_measurements, finalizer=fin.measurements)
    if fns.posted:
      metrics['extensions'] = new[3]
    return new_state, tff.federated_zip(metrics), per_client

  return tff.templates.IterativeProcess(init_fn, next_fn)


def _vector_sizes(model_fn, vectored, update_size: int) -> dict:
  if not vectored:
    return {}
  with tf.Graph().as_default():
    model = model_fn()
    return {e.name: int(e.vector_size(model, update_size)) for e in vectored}


def _federated_aggregate_pass(fns: RoundFunctions, slot_result_type):
  """(per_client@CLIENTS, vectors@CLIENTS, aggregate@SERVER) -> per_client@CLIENTS with the extensions'
  `aggregate_measurements` added (see module docstring)."""
  per_client_type, vectors_type = slot_result_type[3], slot_result_type[4]
  sums = tff.tensorflow.computation(fns.vector_sums, vectors_type)
  mean = tff.tensorflow.computation(fns.vector_means, sums.type_signature.result)
  measure = tff.tensorflow.computation(
      lambda per_client, vectors, means, aggregate: fns.aggregate_measurements(per_client, vectors, means, aggregate),
      per_client_type, vectors_type, mean.type_signature.result, fns.parts.update_type)

  def run(per_client, vectors, aggregate):
    means = tff.federated_broadcast(tff.federated_map(mean, tff.federated_sum(tff.federated_map(sums, vectors))))
    return tff.federated_map(measure, (per_client, vectors, means, tff.federated_broadcast(aggregate)))

  return run


def _aggregator_input(extensions) -> Optional[extension_lib.Extension]:
  chosen = [e for e in extensions if e.aggregator_input]
  if len(chosen) > 1:
    raise ValueError(f'at most one extension may send aggregator inputs; got {[e.name for e in chosen]}.')
  return chosen[0] if chosen else None


def _weight_type(agg_input):
  """None (float32), or OrderedDict(weight=float32, <name>=its fields of one client) (Extension.aggregator_input)."""
  if agg_input is None:
    return None
  fields = [(k, tff.TensorType(s.dtype.as_numpy_dtype, s.shape.as_list())) for k, s in agg_input.field_specs().items()]
  return tff.StructWithPythonType([('weight', tff.TensorType(np.float32)),
                                   (agg_input.name, tff.StructWithPythonType(fields, collections.OrderedDict))],
                                  collections.OrderedDict)
