"""FedNova (Wang et al. 2020): normalized averaging for clients that run different numbers of local steps.

FedAvg weights a client's update by how many local steps it ran, so with unequal steps (stragglers, random epochs)
it converges to the optimum of a different, step-weighted objective. FedNova divides each update by the client's
step budget and rescales by the cohort's effective steps:

  client i:  tau_i local steps of SGD (momentum rho optional) -> Delta_i = x - y_i;
             a_i = ||a||_1 = tau_i for SGD, [tau_i - rho(1 - rho^tau_i)/(1 - rho)] / (1 - rho) with momentum
             sends (d_i = Delta_i / a_i, a_i) with weight p_i (examples, or 1)
  server:    x <- x - lr_g * tau_eff * sum_i p_i d_i,  tau_eff = sum_i p_i a_i   (p normalized over the cohort)

Built as a stock `tff.learning.templates.LearningProcess` (no client state across rounds): client work emits
update = OrderedDict(normalized=d_i, steps=a_i); the model aggregator (default MeanFactory, weighted by p_i) averages
both; the finalizer scales the mean d by the mean a and hands it to TFF's apply-optimizer finalizer. With equal
steps on every client this is exactly FedAvg.
"""

import collections
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import client_work as client_work_lib
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import stateful_process

ClientWeighting = tff.learning.ClientWeighting


def step_norm(num_steps: tf.Tensor, momentum: float) -> tf.Tensor:
  """||a||_1 of Wang et al.: the sum of the coefficients of the local gradients in the update (float32)."""
  if momentum == 0.0:
    return num_steps
  rho = tf.constant(momentum, tf.float32)
  return (num_steps - rho * (1.0 - tf.pow(rho, num_steps)) / (1.0 - rho)) / (1.0 - rho)


def build_fednova_finalizer(server_optimizer, weights_type, update_type) -> tff.learning.templates.FinalizerProcess:
  """Applies `server_optimizer` to tau_eff * mean d (the aggregated OrderedDict(normalized, steps))."""
  stock = tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type)

  @tff.tensorflow.computation(update_type)
  def effective_update(update):
    return tf.nest.map_structure(lambda d: d * update['steps'], update['normalized'])

  @tff.federated_computation(stock.initialize.type_signature.result, tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(update_type, tff.SERVER))
  def next_fn(state, weights, update):
    return stock.next(state, weights, tff.federated_map(effective_update, update))

  return tff.learning.templates.FinalizerProcess(stock.initialize, next_fn)


def build_fednova(model_fn: client_work_lib.ModelFn, client_learning_rate: float,
                  server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *,
                  client_momentum: float = 0.0,
                  client_weighting: ClientWeighting = ClientWeighting.NUM_EXAMPLES,
                  model_aggregator: Optional[fed_avg.AnyFactory] = None,
                  metrics_aggregator=None) -> tff.learning.templates.LearningProcess:
  """FedNova (see module docstring) with local SGD at `client_learning_rate` (momentum `client_momentum`)."""
  if not client_learning_rate > 0:
    raise ValueError(f'client_learning_rate (--client_learning_rate) must be > 0; got {client_learning_rate}.')
  if not 0.0 <= client_momentum < 1.0:
    raise ValueError(f'client_momentum (--client_momentum) must be in [0, 1); got {client_momentum}.')
  optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=client_learning_rate, momentum=client_momentum if client_momentum > 0 else None)

  def client_tf_fn(initial_weights, dataset):
    local_train = stateful_process.build_local_sgd_fn(model_fn(), weighting=client_weighting)
    out, unfinalized = local_train(optimizer, initial_weights, dataset)
    norm = step_norm(out['num_steps'], float(client_momentum))
    safe = tf.maximum(norm, 1e-12)
    update = collections.OrderedDict(normalized=tf.nest.map_structure(lambda d: d / safe, out['update']),
                                     steps=norm)
    return tff.learning.templates.ClientResult(update=update, update_weight=out['update_weight']), unfinalized

  client_work = client_work_lib.build_client_work_process(client_tf_fn, model_fn, metrics_aggregator)
  initial_fn = fed_avg.initial_weights_computation(model_fn)
  weights_type = initial_fn.type_signature.result
  update_type = client_work.next.type_signature.result.result.member.update
  aggregator = fed_avg.build_model_aggregator(model_aggregator, update_type)
  finalizer = build_fednova_finalizer(
      server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0), weights_type, update_type)
  distributor = tff.learning.templates.build_broadcast_process(weights_type)
  return tff.learning.templates.compose_learning_process(initial_fn, distributor, client_work, aggregator, finalizer)
