"""The engine's round run in this process: one traced TF graph per round, no TFF runtime in the loop.

The federated round (`round.build_round`) is a TFF computation over CLIENTS slots. TFF's runtime executes it in
its C++ worker, so every round serializes the model, the packed cohort and a stateful algorithm's client states
(100 clients x 55k floats = 22 MB each way) to the worker and back. For a cohort in one slot on this machine the
placements are trivial — a broadcast is the value, `federated_aggregate` over one slot is `report(merge(zero,
acc))`, a `federated_sum` over one slot is the value — so `LocalRound` runs exactly the federated round's pieces in
one graph: the same `RoundFunctions` the federated round wraps, the aggregator's MapReduceForm pieces, and the
finalizer's and initializer's own TFF computations reduced to TF (`server_computation`). Results equal the
federated round's (tests/engine/test_local_round.py); `EngineProcess(runtime='tff')` keeps the federated path
(several workers, or a TFF runtime of the user's choice).

  round = LocalRound(round.build_round(...))
  state = round.initialize();  new_state, metrics, per_client = round.next(state, slots)   # numpy in and out
"""

import collections
import collections.abc

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.mapreduce import compiler as mapreduce_compiler
from tensorflow_federated.python.core.backends.mapreduce import form_utils
from tensorflow_federated.python.core.environments.tensorflow_backend import tensorflow_tree_transformations
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.types import type_conversions

from tff_fl.engine import graph_calls
from tff_fl.engine import round as round_lib


def server_computation(comp: tff.Computation) -> tff.Computation:
  """A federated computation whose parameter and result are all at SERVER (e.g. a finalizer's `next`), as the
  equivalent TF computation over the unplaced values (TFF's own local-processing extraction)."""
  tree, _ = tensorflow_tree_transformations.replace_intrinsics_with_bodies(comp.to_building_block())
  tree = mapreduce_compiler.consolidate_and_extract_local_processing(tree, form_utils._GRAPPLER_DEFAULT_CONFIG)  # pylint: disable=protected-access
  return computation_impl.ConcreteComputation(computation_proto=tree.proto,
                                              context_stack=context_stack_impl.context_stack)


def conform(value, spec):
  """`value` (any mix of Mappings, namedtuples, `tff.structure.Struct`s and sequences with the same fields) in the
  containers of `spec` (e.g. `tff.types.type_to_tf_tensor_specs` of a type with Python containers), matching named
  fields by name and the others by position."""
  if isinstance(spec, tf.TensorSpec):
    return value
  if isinstance(spec, tuple) and hasattr(spec, '_fields'):
    return type(spec)(*[conform(_field(value, f, i), s) for i, (f, s) in enumerate(zip(spec._fields, spec))])
  if isinstance(spec, collections.abc.Mapping):
    return type(spec)((k, conform(_field(value, k, i), s)) for i, (k, s) in enumerate(spec.items()))
  if isinstance(spec, (list, tuple)):
    return type(spec)(conform(_field(value, None, i), s) for i, s in enumerate(spec))
  raise TypeError(f'cannot conform to {type(spec).__name__}.')


def _field(value, name, index):
  if isinstance(value, collections.abc.Mapping):
    return value[name] if name is not None and name in value else list(value.values())[index]
  if name is not None and (isinstance(value, tff.structure.Struct) or hasattr(value, '_fields')):
    return getattr(value, name)
  return value[index]


def _numpy(structure):
  return tf.nest.map_structure(lambda t: t.numpy() if isinstance(t, tf.Tensor) else t, structure)


class LocalRound:
  """`initialize()` and `next(state, [slot])` of a `round.build_round` round, for a cohort packed in one slot."""

  def __init__(self, round_: round_lib.Round):
    self.functions = functions = round_.functions
    fns, agg = functions, functions.agg
    self._init = form_utils.get_state_initialization_computation(round_.initialize)
    self._finalizer_next = server_computation(fns.finalizer.next)
    self._state_spec = tff.types.type_to_tf_tensor_specs(round_.initialize.type_signature.result.member)
    self._slot_spec = tff.types.type_to_tf_tensor_specs(round_.slot_type)
    posted = bool(fns.posted)
    models = []

    def make_model():
      # The model is created inside a trace (tf.function lifts its variables): Keras swaps its classes to v1
      # whenever TFF traces a model in a tf.Graph, and a model created eagerly before such a trace cannot be
      # called afterwards. Its own small function, so that `step` creates no variables and is traced once (a
      # function that creates variables is traced twice).
      if not models:
        models.append(fns.parts.model_fn())
      return tf.constant(0)

    def step(state, slot):
      parts, spec = fns.parts, self._state_spec
      model = models[0]  # Its metrics are reset every round.
      model.reset_metrics()
      ext_bcast = parts.extension_broadcast(state['extensions'])
      client_input = graph_calls.call_as_function(agg.form.prepare, state['aggregator'])
      outputs = fns.train_slot(model, state['model'], state['extra'], ext_bcast, client_input, slot)
      acc, upload_sum, metric_sums, per_client = outputs[:4]
      merged = graph_calls.call_as_function(agg.form.merge, (graph_calls.call_as_function(agg.form.zero), acc))
      report = graph_calls.call_as_function(agg.form.report, merged)
      agg_state, agg_out = graph_calls.call_as_function(agg.form.update, (state['aggregator'], (report, (), (), ())))
      agg_state = conform(agg_state, self._state_spec['aggregator'])
      aggregate = agg_out['result']
      if fns.vectored:
        vectors = outputs[4]
        means = fns.vector_means(fns.vector_sums(vectors))
        per_client = fns.aggregate_measurements(per_client, vectors, means, aggregate)
      delta = fns.server_delta(aggregate, state['extensions'])
      fin = graph_calls.call_as_function(self._finalizer_next, (state['finalizer'], state['model'], delta))
      fin_result, fin_state = conform(fin['result'], spec['model']), conform(fin['state'], spec['finalizer'])
      weights, extra, ext_states, ext_measurements = fns.server_update(fin_result, state['extra'], upload_sum,
                                                                       state['extensions'])
      new_state = collections.OrderedDict(model=weights, extra=extra, extensions=ext_states, aggregator=agg_state,
                                          finalizer=fin_state)
      metrics = collections.OrderedDict(
          client_work=metric_sums,  # Finalized outside the graph: Keras finalizers create variables.
          aggregator=agg_out['measurements'], finalizer=fin['measurements'])
      if posted:
        metrics['extensions'] = ext_measurements
      return new_state, metrics, per_client

    self._finalize = None  # Built on the first round, from the type of the metric sums.
    self.models_made = False
    self._make_model = tf.function(make_model, autograph=False)
    self._step_fn = step
    self._step = tf.function(step, input_signature=(self._state_spec, self._slot_spec), autograph=False)
    self._static_step, self._static_size = None, None

  def _step_for(self, slot):
    """The round's function for `slot`: traced for the first nonzero slot size seen with that size static (the
    client axis then skips `tf.vectorized_map`'s copies of stacked inputs; most runs' cohorts have one size), and
    for any other size with the size dynamic."""
    size = int(np.shape(slot['n'])[0])
    if self._static_size is None and size > 0:
      static = lambda s: tf.TensorSpec([size] + s.shape.as_list()[1:], s.dtype) if s.shape.rank else s
      self._static_size = size
      self._static_step = tf.function(self._step_fn, autograph=False, input_signature=(
          self._state_spec, tf.nest.map_structure(static, self._slot_spec)))
    return self._static_step if size == self._static_size else self._step

  def initialize(self):
    return conform(graph_calls.SessionComputation(self._init)(), self._state_spec)

  def _finalize_metrics(self, sums):
    # Keras metric finalizers create variables: they run in their own session, as a TF computation.
    if self._finalize is None:
      sums_type = type_conversions.infer_type(sums)
      self._finalize = graph_calls.SessionComputation(
          tff.tensorflow.computation(lambda sums: self.functions.finalize_metrics(sums), sums_type))
    return self._finalize(sums)

  def next(self, state, slots):
    if len(slots) != 1:
      raise ValueError(f'LocalRound runs a cohort packed in one slot; got {len(slots)} slots.')
    if not self.models_made:
      self._make_model()
      self.models_made = True
    step = self._step_for(slots[0])
    new_state, metrics, per_client = _numpy(step(conform(state, self._state_spec), slots[0]))
    metrics['client_work'] = collections.OrderedDict(train=self._finalize_metrics(metrics['client_work']))
    return conform(new_state, self._state_spec), metrics, [per_client]
