"""Running a `tff.tensorflow.computation`'s serialized graph in this process, without TFF's runtime.

  call_in_graph(comp, arg)   imports the computation into the current TF graph (a tf.function or loop body) and
                             returns its result tensors; refuses computations with an initializer (variables).
  call_as_function(comp, arg)  the same behind a function-call boundary (isolates its TF1 control flow).
  SessionComputation(comp)   imports it once into its own TF1 graph and session, runs its initializer once, and
                             is then called with numpy values (e.g. Keras metric finalizers, which create variables).
"""

import itertools

import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.types import type_conversions
from tensorflow_federated.python.core.impl.utils import tensorflow_utils
from tensorflow_federated.python.tensorflow_libs import serialization_utils
from tensorflow.python.eager import context  # pylint: disable=g-direct-tensorflow-import
from tensorflow_federated.proto.v0 import computation_pb2 as pb

_suffixes = itertools.count()


def call_in_graph(comp: tff.Computation, arg=None):
  """Calls a `tff.tensorflow.computation` inside the current TF graph, including a `tf.function` or loop body
  (TFF's own nested invocation imports into the outermost computation graph, which a loop body cannot use)."""
  proto = _with_own_functions(computation_impl.ConcreteComputation.get_proto(comp))
  token = tf.constant('', tf.string)  # TFF's per-session token placeholder; unused by these pieces.
  init_op, result = tensorflow_utils.deserialize_and_call_tf_computation(
      proto, arg, tf.compat.v1.get_default_graph(), f'_fast_{next(_suffixes)}', token)
  if init_op:
    raise ValueError('the packed engine cannot run aggregator pieces that create variables.')
  return type_conversions.type_to_py_container(result, comp.type_signature.result)


def call_as_function(comp: tff.Computation, arg=None):
  """`call_in_graph` behind a function-call boundary, in a TF1-style function (`tf.compat.v1.wrap_function`: no
  automatic control dependencies), as TFF's runtime runs it: TF1 control flow in the imported graph (e.g. `tf.map_fn`
  in a robust aggregator's `report`, next to an assert) then stays valid inside the caller's `tf.function`."""
  flat_arg = [] if arg is None else tf.nest.flatten(arg)
  structures = []  # The result's Python structure, seen while tracing.

  def call(*leaves):
    out = call_in_graph(comp, None if arg is None else tf.nest.pack_sequence_as(arg, list(leaves)))
    structures.append(out)
    return tf.nest.flatten(out)

  wrapped = tf.compat.v1.wrap_function(call, [tf.TensorSpec(t.shape, t.dtype) for t in flat_arg])
  return tf.nest.pack_sequence_as(structures[0], wrapped(*flat_arg))


def _with_own_functions(proto):
  """`proto` with every function of its graph's library renamed with a fresh suffix and added to the eager
  context. Importing a GraphDef into a tf.function graph does not carry its library (the bodies of functional loops
  and conds) into the traced function, and names are not unique across TFF's compiled pieces (the same loop
  function appears optimized differently in several), so each import gets its own copies."""
  graph_def = serialization_utils.unpack_graph_def(proto.tensorflow.graph_def)
  names = {f.signature.name for f in graph_def.library.function}
  if not names:
    return proto
  suffix = f'_call{next(_suffixes)}'

  def rename_attrs(attrs):
    for value in attrs.values():
      if value.HasField('func') and value.func.name in names:
        value.func.name += suffix
      for func in value.list.func:
        if func.name in names:
          func.name += suffix

  def rename_nodes(nodes):
    for node in nodes:
      if node.op in names:
        node.op += suffix
      rename_attrs(node.attr)

  rename_nodes(graph_def.node)
  for fdef in graph_def.library.function:
    fdef.signature.name += suffix
    rename_nodes(fdef.node_def)
    rename_attrs(fdef.attr)
  for gradient in graph_def.library.gradient:
    if gradient.function_name in names:
      gradient.function_name += suffix
    if gradient.gradient_func in names:
      gradient.gradient_func += suffix
  ctx = context.context()
  for fdef in graph_def.library.function:
    ctx.add_function_def(fdef)
  renamed = pb.Computation()
  renamed.CopyFrom(proto)
  renamed.tensorflow.graph_def.CopyFrom(serialization_utils.pack_graph_def(graph_def))
  return renamed


class SessionComputation:
  """`comp(arg)` on numpy values in a TF1 session of this process (module docstring); the result is in the
  Python containers of `comp`'s result type."""

  def __init__(self, comp: tff.Computation):
    self._comp = comp
    proto = computation_impl.ConcreteComputation.get_proto(comp)
    parameter = comp.type_signature.parameter
    with tf.Graph().as_default() as graph:
      if parameter is None:
        self._placeholders = None
      else:
        specs = tff.types.type_to_tf_tensor_specs(parameter)
        self._placeholders = tf.nest.map_structure(lambda s: tf.compat.v1.placeholder(s.dtype, s.shape), specs)
      token = tf.constant('', tf.string)
      init_op, self._result = tensorflow_utils.deserialize_and_call_tf_computation(
          proto, self._placeholders, graph, '_session', token)
    self._is_struct = isinstance(self._result, tff.structure.Struct)
    self._fetches = tff.structure.flatten(self._result) if self._is_struct else self._result
    self._session = tf.compat.v1.Session(graph=graph)
    if init_op:
      self._session.run(init_op)

  def __call__(self, arg=None):
    feed = None
    if self._placeholders is not None:
      feed = dict(zip(tf.nest.flatten(self._placeholders), tf.nest.flatten(arg)))
    values = self._session.run(self._fetches, feed_dict=feed)
    if self._is_struct:
      values = tff.structure.pack_sequence_as(self._result, values)
    return type_conversions.type_to_py_container(values, self._comp.type_signature.result)
