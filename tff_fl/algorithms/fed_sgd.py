"""FedSGD (McMahan et al. 2017, the large-batch baseline): each client computes the average gradient of its loss over
all its local data at the broadcast model; the server averages those gradients (weighted by examples) and takes one
server-optimizer step. Matches stock `tff.learning.algorithms.build_fed_sgd`.

Update shape: the trainable weights' structure (a gradient, not a delta: server SGD subtracts lr * update).
"""

from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.learning import tensor_utils

from tff_fl.algorithms import client_work as client_work_lib
from tff_fl.algorithms import fed_avg


def build_gradient_fn(model: tff.learning.models.VariableModel, weighting):
  """A `tf.function` (initial ModelWeights, dataset) -> (ClientResult(mean gradient, weight), unfinalized metrics)."""

  @tf.function
  def client_gradient(initial_weights, data):
    weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda a, b: a.assign(b), weights, initial_weights)

    def reduce_fn(state, batch):
      grad_sum, num_examples = state
      with tf.GradientTape() as tape:
        output = model.forward_pass(batch, training=True)
      batch_size = tf.shape(output.predictions)[0] if output.num_examples is None else output.num_examples
      batch_size = tf.cast(batch_size, tf.float32)
      grads = tape.gradient(output.loss, weights.trainable)
      grad_sum = tf.nest.map_structure(lambda s, g: s + g * batch_size, grad_sum, grads)
      return grad_sum, num_examples + batch_size

    def reduce_flat(state, batch):  # Dataset.reduce packs lists into tensors, so carry a flat tuple.
      grad_sum, num_examples = reduce_fn((tf.nest.pack_sequence_as(weights.trainable, state[0]), state[1]), batch)
      return tuple(tf.nest.flatten(grad_sum)), num_examples

    zeros = tuple(tf.zeros_like(w) for w in tf.nest.flatten(weights.trainable))
    grad_sum, num_examples = data.reduce((zeros, tf.constant(0.0)), reduce_flat)
    grad_sum = tf.nest.pack_sequence_as(weights.trainable, grad_sum)
    grads = tf.nest.map_structure(lambda g: g / tf.maximum(num_examples, 1.0), grad_sum)
    grads, has_non_finite = tensor_utils.zero_all_if_any_non_finite(grads)
    weight = client_work_lib.client_weight(weighting, has_non_finite, num_examples)
    return (tff.learning.templates.ClientResult(update=grads, update_weight=weight),
            model.report_local_unfinalized_metrics())

  return client_gradient


def build_gradient_client_work(model_fn: client_work_lib.ModelFn,
                               client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
                               metrics_aggregator=None) -> tff.learning.templates.ClientWorkProcess:
  """`ClientWorkProcess` whose update is the client's mean gradient at the broadcast model."""

  def client_tf_fn(initial_weights, dataset):
    return build_gradient_fn(model_fn(), client_weighting)(initial_weights, dataset)

  return client_work_lib.build_client_work_process(client_tf_fn, model_fn, metrics_aggregator)


def build_fed_sgd(model_fn: client_work_lib.ModelFn,
                  server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *,
                  client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
                  model_aggregator=None, model_distributor=None,
                  metrics_aggregator=None) -> tff.learning.templates.LearningProcess:
  """FedSGD; default server optimizer is SGD with learning rate 0.1 (TFF's default)."""
  server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  work = build_gradient_client_work(model_fn, client_weighting, metrics_aggregator)
  return fed_avg.compose(model_fn, work, server_optimizer, model_aggregator, model_distributor)
