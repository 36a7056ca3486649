"""Any `tff.aggregators` process, applied per real client to clients packed into one CLIENTS slot.

TFF's own compiler splits a one-round federated computation into its MapReduceForm: `prepare` (server state ->
value broadcast to clients), `work` (one client's data + broadcast value -> its contribution), `zero` /
`accumulate` / `merge` / `report` (the federated_aggregate that combines contributions) and `update` (server state,
global update -> new state, output). `ClientAxisAggregation` takes that form of the aggregator's `next`, so a packed
CLIENTS slot holding many real clients runs `work` + `accumulate` once per real client (clipping, zeroing,
weighting, DP's per-client clip and every other client-side step run per client, exactly as stock TFF would), the
slots' accumulators are combined with `federated_aggregate(merge)`, and the server runs `report` + `update`.

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

from tff_fl.engine.graph_calls import call_in_graph

# TFF's default grappler pass inlines functions and lowers functional loops to v1 frames, which cannot be imported
# into the slot's client loop; an aggregator whose client part loops (e.g. secagg's masks) needs them functional.
_GRAPPLER = tf.compat.v1.ConfigProto()
_GRAPPLER.graph_options.rewrite_options.function_optimization = (
    _GRAPPLER.graph_options.rewrite_options.OFF)

class ClientAxisAggregation:
  """MapReduceForm pieces of `process.next(state, value@CLIENTS, weight@CLIENTS)`.

  In a TF computation: `acc = zero()`, then per client `acc = accumulate_client(acc, value, weight, client_input)`.
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

  # TensorFlow side (call inside a TF computation / tf.function).
  def zero(self):
    return call_in_graph(self.form.zero)

  def accumulate_client(self, accumulator, value, weight, client_input):
    """Runs the aggregator's client-side `work` on one client's (value, weight) and adds it to `accumulator`."""
    contribution = call_in_graph(self.form.work, (collections.OrderedDict(value=value, weight=weight), client_input))
    return call_in_graph(self.form.accumulate, (accumulator, contribution[0]))

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
