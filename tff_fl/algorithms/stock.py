"""Stock export: a stateless algorithm definition as a `tff.learning.templates.LearningProcess` over `tf.data`.

Composed like TFF's `fed_avg.py` from distributor (broadcast), client work (the definition's `client_update` on the
client's dataset), aggregator (any `tff.aggregators` factory) and finalizer (the server optimizer applied to
`algorithm.to_server_delta(aggregate)`), so it runs in TFF's own programs and runtime; the engine runs the same
definition on packed clients (tests keep the two equal).
"""

import collections
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import definition
from tff_fl.algorithms import local_training
from tff_fl.algorithms import model_types

ClientWeighting = tff.learning.ClientWeighting


def build_client_work(algorithm: definition.Algorithm, model_fn: model_types.ModelFn,
                      client_optimizer: tff.learning.optimizers.Optimizer, *,
                      client_weighting: ClientWeighting = ClientWeighting.NUM_EXAMPLES,
                      metrics_aggregator=None,
                      options: local_training.LocalOptions = local_training.LocalOptions()
                      ) -> tff.learning.templates.ClientWorkProcess:
  """Stateless `ClientWorkProcess` running `algorithm.client_update`; measurements OrderedDict(train=metrics).

  `options`: local-training options every client uses (e.g. `LocalOptions(dp=DPSGD(...))`, sample-level DP-SGD).
  """
  if not algorithm.stateless:
    raise ValueError(f'{algorithm.name} keeps client state or a server extra; a stock LearningProcess cannot carry '
                     'them (use tff_fl.engine.build_process).')
  if not isinstance(client_optimizer, tff.learning.optimizers.Optimizer):
    raise TypeError(f'client_optimizer must be a tff.learning.optimizers.Optimizer; got {type(client_optimizer)}.')
  weights_type, data_type, finalizers = model_types.model_types(model_fn)
  with tf.Graph().as_default():
    metrics_fn = (metrics_aggregator or tff.learning.metrics.sum_then_finalize)(finalizers)

  @tff.tensorflow.computation(weights_type, data_type)
  def client_update(initial_weights, dataset):
    model = model_fn()

    @tf.function
    def run():
      ctx = definition.ClientContext(model, initial_weights, definition.NO_VALUE, None, dataset, client_optimizer,
                                     client_weighting, options)
      out = algorithm.client_update(ctx)
      return (tff.learning.templates.ClientResult(update=out['update'], update_weight=out['update_weight']),
              model.report_local_unfinalized_metrics())

    return run()

  @tff.federated_computation
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(weights_type, tff.CLIENTS),
                             tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, client_data):
    client_result, model_outputs = tff.federated_map(client_update, (weights, client_data))
    train_metrics = metrics_fn(model_outputs)
    return tff.templates.MeasuredProcessOutput(
        state, client_result, tff.federated_zip(collections.OrderedDict(train=train_metrics)))

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)


def build_finalizer(algorithm: definition.Algorithm, server_optimizer, weights_type,
                    update_type) -> tff.learning.templates.FinalizerProcess:
  """TFF's apply-optimizer finalizer on `algorithm.to_server_delta(aggregate)`."""
  stock = tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type)
  if type(algorithm).to_server_delta is definition.Algorithm.to_server_delta:
    return stock

  @tff.tensorflow.computation(update_type)
  def to_delta(update):
    return algorithm.to_server_delta(update)

  @tff.federated_computation(stock.initialize.type_signature.result, tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(update_type, tff.SERVER))
  def next_fn(state, weights, update):
    return stock.next(state, weights, tff.federated_map(to_delta, update))

  return tff.learning.templates.FinalizerProcess(stock.initialize, next_fn)


def build_learning_process(algorithm: definition.Algorithm, model_fn: model_types.ModelFn,
                           client_optimizer: tff.learning.optimizers.Optimizer,
                           server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *,
                           client_weighting: ClientWeighting = ClientWeighting.NUM_EXAMPLES,
                           model_aggregator: Optional[model_types.AnyFactory] = None,
                           model_distributor: Optional[tff.learning.templates.DistributionProcess] = None,
                           metrics_aggregator=None,
                           options: local_training.LocalOptions = local_training.LocalOptions()
                           ) -> tff.learning.templates.LearningProcess:
  """The stock `LearningProcess` of a stateless `algorithm` (module docstring); `options` as in build_client_work."""
  algorithm.validate()
  work = build_client_work(algorithm, model_fn, client_optimizer, client_weighting=client_weighting,
                           metrics_aggregator=metrics_aggregator, options=options)
  initial_fn = model_types.initial_weights_computation(model_fn)
  weights_type = initial_fn.type_signature.result
  update_type = work.next.type_signature.result.result.member.update
  server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(
      learning_rate=algorithm.default_server_learning_rate())
  distributor = model_distributor or tff.learning.templates.build_broadcast_process(weights_type)
  aggregator = model_types.build_model_aggregator(model_aggregator, update_type)
  finalizer = build_finalizer(algorithm, server_optimizer, weights_type, update_type)
  return tff.learning.templates.compose_learning_process(initial_fn, distributor, work, aggregator, finalizer)
