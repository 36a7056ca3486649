"""FedSGD (McMahan et al. 2017, the large-batch baseline) as an algorithm definition.

Each client computes the mean gradient of its loss over all its local data at the broadcast model (no local step);
the server averages those gradients (weighted per `client_weighting`) and takes one server-optimizer step (default
SGD at 0.1, TFF's default). Matches stock `tff.learning.algorithms.build_fed_sgd`:

  client i:  g_i = sum_b |b| grad L_b(x) / sum_b |b|     (batches b of the client's data; sums in float32)
             update = g_i, weight = n_i (NUM_EXAMPLES) or 1 (UNIFORM); 0 and weight 0 if g_i is not finite
  server:    x <- server_optimizer(x, mean_i g_i)          (SGD: x - lr * mean gradient)

Components' local options apply to the gradient: DP-SGD replaces each batch's gradient by its clipped, summed,
noised per-example gradients / |b| (`local_training.batch_gradient`); pruning masks multiply the gradient.
Update shape: the trainable weights' structure (a gradient, not a delta: server SGD subtracts lr * update).
"""

import collections
import dataclasses
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.learning import tensor_utils

from tff_fl.algorithms import definition
from tff_fl.algorithms import local_training
from tff_fl.algorithms import model_types
from tff_fl.algorithms import stock

ClientWeighting = tff.learning.ClientWeighting


def _mean_gradient_on_model(model, initial_weights, data, options):
  """(mean gradient leaves, examples, mean loss, trainable structure) over `data` on the Keras model."""
  weights = tff.learning.models.ModelWeights.from_model(model)
  assign = tf.nest.map_structure(lambda a, b: a.assign(b), weights, initial_weights)
  trainable = weights.trainable

  def reduce_fn(state, batch):
    grad_sum, num_examples, loss_sum, batches = state
    key = (None if options.noise_key is None
           else tf.random.experimental.stateless_fold_in(options.noise_key, batches))
    grads, output = local_training.batch_gradient(model, weights, batch, options.dp, key)
    if output.num_examples is None:
      batch_size = tf.cast(tf.shape(output.predictions)[0], tf.float32)
    else:
      batch_size = tf.cast(output.num_examples, tf.float32)
    grad_sum = tuple(s + g * batch_size for s, g in zip(grad_sum, tf.nest.flatten(grads)))
    loss_sum += tf.cast(output.loss, tf.float64) * tf.cast(batch_size, tf.float64)
    return grad_sum, num_examples + batch_size, loss_sum, batches + 1

  with tf.control_dependencies(tf.nest.flatten(assign)):
    init = (tuple(tf.zeros(v.shape, v.dtype) for v in tf.nest.flatten(trainable)), tf.constant(0.0),
            tf.constant(0.0, tf.float64), tf.constant(0, tf.int64))
  grad_sum, num_examples, loss_sum, _ = data.reduce(init, reduce_fn)
  loss = loss_sum / tf.maximum(tf.cast(num_examples, tf.float64), 1.0)
  return [g / tf.maximum(num_examples, 1.0) for g in grad_sum], num_examples, loss, trainable


def mean_gradient(model: tff.learning.models.VariableModel, initial_weights, data, *,
                  weighting: ClientWeighting, options: local_training.LocalOptions = local_training.LocalOptions()
                  ) -> collections.OrderedDict:
  """The client's example-weighted mean gradient at `initial_weights` over `data` (`.reduce` as tf.data), or, on
  the engine's client axis, over the client's packed batches (`client_axis.ClientAxisModel.gradient_call`).

  Returns local training's result layout: update (the gradient), update_weight, num_steps (0: no step is taken),
  finite, loss (example-weighted mean), num_examples.
  """
  if hasattr(model, 'gradient_call'):  # A client on the engine's client axis (`client_axis.ClientAxisModel`).
    out = model.gradient_call(initial_weights, options, track_metrics=True)
    grads, num_examples, loss = tf.nest.flatten(out['gradient']), out['num_examples'], out['loss']
    trainable = initial_weights.trainable
  else:
    grads, num_examples, loss, trainable = _mean_gradient_on_model(model, initial_weights, data, options)
  if options.masks is not None:
    grads = [g * m for g, m in zip(grads, tf.nest.flatten(options.masks))]
  grads, has_non_finite = tensor_utils.zero_all_if_any_non_finite(tf.nest.pack_sequence_as(trainable, grads))
  return collections.OrderedDict(
      update=grads,
      update_weight=local_training.client_weight(weighting, has_non_finite, num_examples),
      num_steps=tf.constant(0.0),
      finite=tf.cast(tf.equal(has_non_finite, 0), tf.float32),
      loss=tf.cast(loss, tf.float32),
      num_examples=num_examples)


@dataclasses.dataclass(frozen=True)
class FedSGD(definition.Algorithm):
  """One gradient per client at the broadcast model; the server optimizer steps on the averaged gradient."""
  name = 'fedsgd'

  def default_server_learning_rate(self) -> float:
    return 0.1

  def client_update(self, ctx):
    return definition.client_output(mean_gradient(ctx.model, ctx.weights, ctx.data, weighting=ctx.weighting,
                                                  options=ctx.options))


def build_fed_sgd(model_fn: model_types.ModelFn,
                  server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *,
                  client_weighting: ClientWeighting = ClientWeighting.NUM_EXAMPLES,
                  model_aggregator: Optional[model_types.AnyFactory] = None,
                  model_distributor: Optional[tff.learning.templates.DistributionProcess] = None,
                  metrics_aggregator=None) -> tff.learning.templates.LearningProcess:
  """FedSGD as a stock LearningProcess; default server optimizer SGD at learning rate 0.1 (TFF's default)."""
  return stock.build_learning_process(
      FedSGD(), model_fn, tff.learning.optimizers.build_sgdm(learning_rate=0.0), server_optimizer,
      client_weighting=client_weighting, model_aggregator=model_aggregator, model_distributor=model_distributor,
      metrics_aggregator=metrics_aggregator)
