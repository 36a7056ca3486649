"""Iterative processes with per-client state, and the adapter that runs them against a client state store.

TFF keeps no client state across rounds, so state is an explicit input and output of the round. A
`StatefulProcess` is a `tff.templates.IterativeProcess`:

  initialize() -> server_state@SERVER
  next(server_state@SERVER, client_data@CLIENTS, client_states@CLIENTS)
      -> (server_state@SERVER, client_states'@CLIENTS, metrics)

`metrics` is OrderedDict(client_work=OrderedDict(train=...)@SERVER, aggregator=@SERVER, finalizer=@SERVER,
per_client=OrderedDict(loss, num_examples)@CLIENTS). A user can run it by hand (keeping the client states in a
Python list); `StoreAdapter` runs it in the training loop, reading and writing the sampled cohort's states in a
`tff_fl.simulation.client_state` store. `initial_client_state()` is the state of a client never seen before.

`build_stateful_process` is the shared FedAvg-shaped skeleton (broadcast, client work, any `tff.aggregators`
factory on the model update, server optimizer via TFF's apply-optimizer finalizer) plus an optional server-side
"extra" value broadcast to clients and updated from the SUM of a client upload (SCAFFOLD's control variate,
FedDyn's h), and an optional last server step that adjusts the new model with the new extra (FedDyn's -h/alpha).
Server state: OrderedDict(model=ModelWeights, extra=..., finalizer=<optimizer state>, aggregator=<state>).
"""

import collections
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.aggregators import flat
from tff_fl.algorithms import client_work as client_work_lib
from tff_fl.algorithms import fed_avg


class StatefulProcess(tff.templates.IterativeProcess):
  """IterativeProcess with client state (see module docstring) and LearningProcess-style weight accessors."""

  def __init__(self, initialize_fn, next_fn, get_model_weights, set_model_weights, initial_client_state):
    super().__init__(initialize_fn, next_fn, next_is_multi_arg=True)
    self.get_model_weights = get_model_weights
    self.set_model_weights = set_model_weights
    self.initial_client_state = initial_client_state  # no-arg tff computation -> unplaced client state.

  @property
  def client_state_type(self):
    return self.initial_client_state.type_signature.result


# The package's one local-training loop (with SCAFFOLD's correction and step counts).
build_local_sgd_fn = client_work_lib.build_local_sgd_fn


def build_stateful_process(model_fn: client_work_lib.ModelFn, *, client_fn: Callable, client_state_fn: Callable,
                           server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                           model_aggregator: Optional[fed_avg.AnyFactory] = None,
                           server_extra_fn: Optional[Callable] = None,
                           server_extra_update: Optional[Callable] = None,
                           server_model_update: Optional[Callable] = None,
                           metrics_aggregator=None) -> StatefulProcess:
  """The shared skeleton (see module docstring).

  Args:
    model_fn: no-arg callable returning a fresh `tff.learning.models.VariableModel`.
    client_fn: TF logic (weights, server_extra, client_state, dataset) -> (OrderedDict(update, update_weight,
      client_state, upload, loss, num_examples), unfinalized metrics); `update` has the trainable weights'
      structure and is initial - final (as in FedAvg); `upload` is summed over the cohort.
    client_state_fn: no-arg TF function returning the initial client state (float leaves).
    server_optimizer: applied to the aggregated update; default SGD(1.0).
    model_aggregator: any `tff.aggregators` factory for the updates; default MeanFactory.
    server_extra_fn: no-arg TF function, the initial extra server value (default: float32 0).
    server_extra_update: TF logic (extra, sum of uploads) -> new extra (default: unchanged).
    server_model_update: TF logic (trainable weights after the server optimizer, new extra) -> trainable weights
      (default: unchanged).
    metrics_aggregator: default `tff.learning.metrics.sum_then_finalize`.
  """
  weights_type, data_type, finalizers = client_work_lib.model_types(model_fn)
  initial_fn = fed_avg.initial_weights_computation(model_fn)
  client_state_comp = tff.tensorflow.computation(client_state_fn)
  extra_comp = tff.tensorflow.computation(server_extra_fn or (lambda: tf.constant(0.0, tf.float32)))
  client_state_type = client_state_comp.type_signature.result
  extra_type = extra_comp.type_signature.result
  aggregator = fed_avg.build_model_aggregator(model_aggregator, weights_type.trainable)
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0), weights_type)
  with tf.Graph().as_default():
    metrics_fn = (metrics_aggregator or tff.learning.metrics.sum_then_finalize)(finalizers)

  @tff.tensorflow.computation(weights_type, extra_type, client_state_type, data_type)
  def client_update(weights, extra, client_state, dataset):
    out, unfinalized = client_fn(weights, extra, client_state, dataset)
    result = collections.OrderedDict(
        update=out['update'], update_weight=out['update_weight'], client_state=out['client_state'],
        upload=out['upload'], per_client=collections.OrderedDict(loss=out['loss'], num_examples=out['num_examples']),
        metrics=unfinalized)
    return result

  upload_type = client_update.type_signature.result['upload']

  @tff.tensorflow.computation(extra_type, upload_type)
  def update_extra(extra, upload_sum):
    return extra if server_extra_update is None else server_extra_update(extra, upload_sum)

  @tff.tensorflow.computation(weights_type, extra_type)
  def update_model(weights, extra):
    if server_model_update is None:
      return weights
    return tff.learning.models.ModelWeights(server_model_update(weights.trainable, extra), weights.non_trainable)

  @tff.federated_computation
  def init_fn():
    return tff.federated_zip(collections.OrderedDict(
        model=tff.federated_eval(initial_fn, tff.SERVER), extra=tff.federated_eval(extra_comp, tff.SERVER),
        finalizer=finalizer.initialize(), aggregator=aggregator.initialize()))

  state_type = init_fn.type_signature.result

  @tff.federated_computation(state_type, tff.FederatedType(data_type, tff.CLIENTS),
                             tff.FederatedType(client_state_type, tff.CLIENTS))
  def next_fn(state, client_data, client_states):
    out = tff.federated_map(client_update, (tff.federated_broadcast(state.model),
                                            tff.federated_broadcast(state.extra), client_states, client_data))
    agg_out = aggregator.next(state.aggregator, out.update, out.update_weight)
    fin_out = finalizer.next(state.finalizer, state.model, agg_out.result)
    new_extra = tff.federated_map(update_extra, (state.extra, tff.federated_sum(out.upload)))
    new_model = fin_out.result if server_model_update is None else tff.federated_map(
        update_model, (fin_out.result, new_extra))
    new_state = tff.federated_zip(collections.OrderedDict(
        model=new_model, extra=new_extra, finalizer=fin_out.state, aggregator=agg_out.state))
    metrics = collections.OrderedDict(
        client_work=tff.federated_zip(collections.OrderedDict(train=metrics_fn(out.metrics))),
        aggregator=agg_out.measurements, finalizer=fin_out.measurements, per_client=out.per_client)
    return new_state, out.client_state, metrics

  @tff.tensorflow.computation(state_type.member)
  def get_model_weights(state):
    return state['model']

  @tff.tensorflow.computation(state_type.member, weights_type)
  def set_model_weights(state, weights):
    return collections.OrderedDict(model=weights, extra=state['extra'], finalizer=state['finalizer'],
                                   aggregator=state['aggregator'])

  return StatefulProcess(init_fn, next_fn, get_model_weights, set_model_weights, client_state_comp)


class StatefulOutput:
  """What `StoreAdapter.next` returns: `.state`, `.metrics` (server metrics), `.client_ids`, `.client_metrics`."""

  def __init__(self, state, metrics, client_ids, client_metrics):
    self.state, self.metrics, self.client_ids, self.client_metrics = state, metrics, client_ids, client_metrics


class StoreAdapter:
  """Runs a `StatefulProcess` in the training loop: inputs are (dataset, client_id) pairs; the cohort's states are
  read from `store` (a never-seen client gets `initial_client_state()`) and the updated states written back."""

  def __init__(self, process: StatefulProcess, store):
    self.process = process
    self.store = store
    self.initial_client_state = process.initial_client_state()
    self._template = [np.asarray(x) for x in tf.nest.flatten(self.initial_client_state)]
    if store.dim != state_dim(process):
      raise ValueError(f'store dim {store.dim} does not match the client state size {state_dim(process)}.')

  def flatten(self, client_state) -> np.ndarray:
    return np.concatenate([np.asarray(x, np.float32).reshape(-1) for x in tf.nest.flatten(client_state)])

  def unflatten(self, vector: np.ndarray):
    leaves, offset = [], 0
    for t in self._template:
      leaves.append(np.asarray(vector[offset:offset + t.size]).reshape(t.shape).astype(t.dtype))
      offset += t.size
    return tf.nest.pack_sequence_as(self.initial_client_state, leaves)

  def client_states(self, client_ids) -> list:
    return [self.initial_client_state if v is None else self.unflatten(v) for v in self.store.get_many(client_ids)]

  def initialize(self):
    return self.process.initialize()

  def next(self, state, inputs) -> StatefulOutput:
    pairs = list(inputs)
    if not pairs or any(not (isinstance(p, tuple) and len(p) == 2) for p in pairs):
      raise ValueError('StoreAdapter.next needs a non-empty list of (dataset, client_id) pairs.')
    datasets, client_ids = [p[0] for p in pairs], [p[1] for p in pairs]
    new_state, new_client_states, metrics = self.process.next(state, datasets, self.client_states(client_ids))
    self.store.put_many(client_ids, [self.flatten(s) for s in new_client_states])
    metrics = collections.OrderedDict(metrics)
    per_client = metrics.pop('per_client')
    return StatefulOutput(new_state, metrics, client_ids, per_client)

  def get_model_weights(self, state):
    return self.process.get_model_weights(state)

  def set_model_weights(self, state, weights):
    return self.process.set_model_weights(state, weights)


def state_dim(process: StatefulProcess) -> int:
  """Number of float32 values in one flattened client state (the store's `dim`)."""
  return flat.flat_size(process.client_state_type)
