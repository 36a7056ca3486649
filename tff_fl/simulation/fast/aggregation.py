"""Any `tff.aggregators` process, applied per real client to clients packed into one CLIENTS slot.

TFF's own compiler splits a one-round federated computation into its MapReduceForm: `prepare` (server state ->
value broadcast to clients), `work` (one client's data + broadcast value -> its contribution), `zero` /
`accumulate` / `merge` / `report` (the federated_aggregate that combines contributions) and `update` (server state,
global update -> new state, output). `ClientAxisAggregation` takes that form of the aggregator's `next`, so a packed
CLIENTS slot holding many real clients runs `work` + `accumulate` once per real client (clipping, zeroing,
weighting, DP's per-client clip and every other client-side step run per client, exactly as stock TFF would), the
slots' accumulators are combined with `federated_aggregate(merge)`, and the server runs `report` + `update`.

Limits: aggregators using secure sums (`federated_secure_sum*`) are refused (ValueError); simulate those with the
per-client engine. Shapes/types are those of `process.next`: value = model update structure, weight = float32.
"""

import collections

import tensorflow_federated as tff


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

    self.form = tff.backends.mapreduce.get_map_reduce_form_for_computation(round_comp)
    if self.form.securely_aggregates_tensors:
      raise ValueError('model_aggregator uses secure aggregation, which the packed fast engine does not simulate; '
                       'use the per-client engine (packed=False) or --engine=tff.')
    self.client_input_type = self.form.prepare.type_signature.result
    self.accumulator_type = self.form.zero.type_signature.result

  # TensorFlow side (call inside a TF computation / tf.function).
  def zero(self):
    return self.form.zero()

  def accumulate_client(self, accumulator, value, weight, client_input):
    """Runs the aggregator's client-side `work` on one client's (value, weight) and adds it to `accumulator`."""
    contribution = self.form.work(collections.OrderedDict(value=value, weight=weight), client_input)
    return self.form.accumulate(accumulator, contribution[0])

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
