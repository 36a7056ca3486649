"""Any `tff.aggregators` process, applied per real client to clients packed into one CLIENTS slot.

TFF's own compiler splits a one-round federated computation into its MapReduceForm: `prepare` (server state ->
value broadcast to clients), `work` (one client's data + broadcast value -> its contribution), `zero` /
`accumulate` / `merge` / `report` (the federated_aggregate that combines contributions) and `update` (server state,
global update -> new state, output). `ClientAxisAggregation` takes that form of the aggregator's `next`, so a packed
CLIENTS slot holding many real clients runs `work` + `accumulate` once per real client (clipping, zeroing,
weighting, DP's per-client clip and every other client-side step run per client, exactly as stock TFF would), the
slots' accumulators are combined with `federated_aggregate(merge)`, and the server runs `report` + `update`.

A slot's clients fold into one accumulator in client order (`fold_start` / `fold_add` / `fold_end`). An
accumulator that gains a row per client (robust aggregators: `merge` concatenates) would be copied whole at every
client, O(C^2); there each client's own `accumulate(zero, contribution)` is kept and they are concatenated once at
the end (and leaves that `merge` adds are summed), as `federated_aggregate` may merge them, in O(C).

Secure sums (`federated_secure_sum*`) are lowered to plain sums with their range checks first, as the package's
execution contexts do for every computation (the C++ runtime has no SecAgg protocol), so secure aggregators keep
their per-client encoding and clipping. Limit: an aggregator that broadcasts an aggregate back to the clients
before its final aggregation (a two-pass aggregator, e.g. `secure.secure_mean`, which first sums the weights) has
no MapReduceForm and is refused (ValueError). Shapes/types are those of `process.next`: value = model update
structure, weight = float32.
"""

import collections

import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.test import compiler as test_compiler
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.utils import tensorflow_utils
from tensorflow_federated.python.tensorflow_libs import serialization_utils

from tff_fl.engine.graph_calls import call_in_graph

# TFF's default grappler pass inlines functions and lowers functional loops to v1 frames, which cannot be imported
# into the slot's client loop; an aggregator whose client part loops (e.g. secagg's masks) needs them functional.
_GRAPPLER = tf.compat.v1.ConfigProto()
_GRAPPLER.graph_options.rewrite_options.function_optimization = (
    _GRAPPLER.graph_options.rewrite_options.OFF)

class ClientAxisAggregation:
  """MapReduceForm pieces of `process.next(state, value@CLIENTS, weight@CLIENTS)`.

  In a TF computation: `carry = fold_start(num)`, per client c in order `carry = fold_add(carry, c, value,
  weight, client_input)`, then `acc = fold_end(carry)` (`fold_invariants(carry)`: its tf.while_loop shape
  invariants).
  In the federated round: `client_input = broadcast_input(state)`, then
  `new_state, result, measurements = finish(state, accumulators@CLIENTS)`.
  """

  def __init__(self, process: tff.templates.AggregationProcess):
    state_type, value_type, weight_type = process.next.type_signature.parameter
    data_type = tff.StructType([('value', value_type.member), ('weight', weight_type.member)])
    self.initialize = process.initialize
    self.state_type = state_type

    @tff.federated_computation(state_type, tff.FederatedType(data_type, tff.CLIENTS))
    def round_comp(state, data):
      out = process.next(state, data.value, data.weight)
      return out.state, tff.federated_zip(collections.OrderedDict(result=out.result, measurements=out.measurements))

    lowered = computation_impl.ConcreteComputation.with_type(
        test_compiler.replace_secure_intrinsics_with_bodies(round_comp), round_comp.type_signature)
    try:
      self.form = tff.backends.mapreduce.get_map_reduce_form_for_computation(lowered, grappler_config=_GRAPPLER)
    except ValueError as e:
      if 'broadcast dependent on aggregate' not in str(e):
        raise
      raise ValueError('model_aggregator broadcasts an aggregate back to the clients before its final aggregation '
                       '(a two-pass aggregator such as secure_mean), which the packed engine cannot apply per client '
                       'in one pass; use a one-pass aggregator (e.g. secure_sum inside MeanFactory).') from None
    self.client_input_type = self.form.prepare.type_signature.result
    self.accumulator_type = self.form.zero.type_signature.result
    self._merges = _leaf_merges(self.form.merge, len(tff.structure.flatten(self.accumulator_type)))
    self.concatenates = self._merges is not None and 'concat' in self._merges

  # TensorFlow side (call inside a TF computation / tf.function).
  def zero(self):
    return call_in_graph(self.form.zero)

  def accumulate_client(self, accumulator, value, weight, client_input):
    """Runs the aggregator's client-side `work` on one client's (value, weight) and adds it to `accumulator`."""
    contribution = call_in_graph(self.form.work, (collections.OrderedDict(value=value, weight=weight), client_input))
    return call_in_graph(self.form.accumulate, (accumulator, contribution[0]))

  def fold_start(self, num):
    if not self.concatenates:
      return self.zero()
    return [tf.TensorArray(t.dtype, size=num, infer_shape=False, element_shape=[None] + t.shape.as_list()[1:])
            if how == 'concat' else t for t, how in zip(tf.nest.flatten(self.zero()), self._merges)]

  def fold_add(self, carry, c, value, weight, client_input):
    if not self.concatenates:
      return self.accumulate_client(carry, value, weight, client_input)
    rows = tf.nest.flatten(self.accumulate_client(self.zero(), value, weight, client_input))
    return [leaf.write(c, row) if how == 'concat' else leaf + row
            for leaf, row, how in zip(carry, rows, self._merges)]

  def fold_end(self, carry):
    if not self.concatenates:
      return carry
    zero = self.zero()
    return tf.nest.pack_sequence_as(zero, [tf.concat([z, leaf.concat()], 0) if how == 'concat' else leaf
                                           for z, leaf, how in zip(tf.nest.flatten(zero), carry, self._merges)])

  def fold_invariants(self, carry):
    if self.concatenates:
      return [tf.TensorShape([]) if how == 'concat' else leaf.shape for leaf, how in zip(carry, self._merges)]
    # A 0 dimension (an accumulator that grows, whose merge is not a plain concatenation) is left open.
    return tf.nest.map_structure(lambda t: tf.TensorShape([None if d == 0 else d for d in t.shape.as_list()]), carry)

  # Federated side (call inside a tff.federated_computation).
  def broadcast_input(self, state):
    return tff.federated_broadcast(tff.federated_map(self.form.prepare, state))

  def finish(self, state, accumulators):
    """(new state, result, measurements), all at SERVER, from the CLIENTS slots' accumulators."""
    aggregate = tff.federated_aggregate(accumulators, self.form.zero(), self.form.merge, self.form.merge,
                                        self.form.report)
    empty = tff.federated_value((), tff.SERVER)
    global_update = tff.federated_zip((aggregate, empty, empty, empty))
    updated = tff.federated_map(self.form.update, tff.federated_zip((state, global_update)))
    return updated[0], updated[1].result, updated[1].measurements


def _leaf_merges(merge, num_leaves: int):
  """Per accumulator leaf k, 'concat' if `merge(a, b)` gives `tf.concat([a_k, b_k], 0)` for it (a leaf that starts
  with 0 rows) or 'add' if `a_k + b_k` (through identities); None if some leaf is neither."""
  proto = computation_impl.ConcreteComputation.get_proto(merge)
  nodes = {n.name: n for n in serialization_utils.unpack_graph_def(proto.tensorflow.graph_def).node}
  params = tensorflow_utils.extract_tensor_names_from_binding(proto.tensorflow.parameter)
  results = tensorflow_utils.extract_tensor_names_from_binding(proto.tensorflow.result)
  leaf_types = tff.structure.flatten(merge.type_signature.result)
  if len(results) != num_leaves or len(params) != 2 * num_leaves:
    return None

  def source(name):  # Through Identity nodes -> (producing 'node:index', node).
    node_name, _, index = name.lstrip('^').partition(':')
    node = nodes.get(node_name)
    while node is not None and node.op == 'Identity':
      node_name, _, index = node.input[0].partition(':')
      node = nodes.get(node_name)
    return f'{node_name}:{index or 0}', node

  param_index = {source(p)[0]: i for i, p in enumerate(params)}
  merges = []
  for k, (result, leaf) in enumerate(zip(results, leaf_types)):
    _, node = source(result)
    inputs = [i for i in node.input if not i.startswith('^')] if node is not None else []
    if node is not None and node.op == 'ConcatV2' and len(inputs) == 3 and leaf.shape and leaf.shape[0] is None:
      axis = source(inputs[2])[1]
      if axis is None or axis.op != 'Const' or tf.make_ndarray(axis.attr['value'].tensor) != 0:
        return None
      merges.append('concat')
    elif node is not None and node.op in ('AddV2', 'Add') and len(inputs) == 2:
      merges.append('add')
    else:
      return None
    if [param_index.get(source(i)[0]) for i in inputs[:2]] != [k, num_leaves + k]:
      return None
  return merges
