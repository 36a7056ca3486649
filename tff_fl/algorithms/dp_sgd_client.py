"""Sample-level DP client work: local DP-SGD (per-example clipping + Gaussian noise) as a `ClientWorkProcess`.

Mirrors `tff.learning.templates.build_model_delta_client_work` (same state = optimizer hparams, same result =
`ClientResult(update=initial - final trainable weights, update_weight)`, same `train` metrics), so it plugs into
`tff.learning.templates.compose_learning_process`. Only the gradient differs. For a batch of B examples:

  per-example gradients g_i  = d loss_i / d w              (`tape.jacobian`, vectorized with pfor)
  clipped, summed and noised = GaussianSumQuery(l2_norm_clip=C, stddev=z * C) applied to {g_i}
  gradient fed to optimizer  = noised sum / B

The clipping and the noise are tensorflow-privacy's `GaussianSumQuery` (the query behind its DP Keras
optimizers), so every example moves the summed gradient by at most C in L2 norm. Regularization losses of the
model are not used. Example-level epsilon: `tff_fl.privacy.accounting.example_level_epsilon`.
"""

import collections
from collections.abc import Callable, Mapping
from typing import Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp
from tensorflow_federated.python.learning import tensor_utils

PerExampleLoss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (y_true [B, ...], y_pred [B, ...]) -> [B]
LossArg = Union[PerExampleLoss, tf.keras.losses.Loss]


def _labels(batch):
  return batch['y'] if isinstance(batch, Mapping) else batch[1]


def _per_example(loss) -> PerExampleLoss:
  """A Keras `Loss` object (its unreduced `call`) or a callable already returning per-example losses."""
  if isinstance(loss, tf.keras.losses.Loss):
    return loss.call
  if not callable(loss):
    raise ValueError(f'per_example_loss must be a tf.keras.losses.Loss or a callable, got {loss!r}.')
  return loss


def build_dp_sgd_update(model_fn: Callable[[], tff.learning.models.VariableModel], per_example_loss: LossArg,
                        l2_norm_clip: float, noise_multiplier: float, weighting: tff.learning.ClientWeighting):
  """A `tf.function` (optimizer, initial_weights, data, hparams) -> (ClientResult, unfinalized metrics)."""
  model = model_fn()
  per_example_loss = _per_example(per_example_loss)
  query = tfp.GaussianSumQuery(l2_norm_clip=l2_norm_clip, stddev=l2_norm_clip * noise_multiplier)

  @tf.function
  def client_update(optimizer, initial_weights, data, optimizer_hparams=None):
    model_weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda a, b: a.assign(b), model_weights, initial_weights)
    trainable = tuple(tf.nest.flatten(model_weights.trainable))
    query_state = query.initial_global_state()
    params = query.derive_sample_params(query_state)

    def reduce_fn(state, batch):
      num_examples_sum, optimizer_state = state
      with tf.GradientTape() as tape:
        output = model.forward_pass(batch, training=True)
        losses = per_example_loss(_labels(batch), output.predictions)  # [B]
      jacobians = tape.jacobian(losses, trainable, unconnected_gradients=tf.UnconnectedGradients.ZERO,
                                experimental_use_pfor=True)  # each [B, *weight.shape]
      clipped = tf.vectorized_map(lambda g: query.preprocess_record(params, g), jacobians)
      summed = tf.nest.map_structure(lambda c: tf.reduce_sum(c, axis=0), clipped)
      noised_sum, _, _ = query.get_noised_result(summed, query_state)
      batch_size = tf.shape(losses)[0]
      denominator = tf.cast(tf.maximum(batch_size, 1), tf.float32)
      gradients = tuple(tf.nest.map_structure(lambda g: g / denominator, noised_sum))
      optimizer_state, updated = optimizer.next(optimizer_state, trainable, gradients)
      tf.nest.map_structure(lambda a, b: a.assign(b), trainable, tuple(updated))
      return num_examples_sum + tf.cast(batch_size, tf.int64), optimizer_state

    specs = tf.nest.map_structure(lambda v: tf.TensorSpec(v.shape, v.dtype), trainable)
    optimizer_state = optimizer.initialize(specs)
    if optimizer_hparams is not None:
      optimizer_state = optimizer.set_hparams(optimizer_state, optimizer_hparams)
    num_examples, _ = data.reduce((tf.constant(0, tf.int64), optimizer_state), reduce_fn)

    update = tf.nest.map_structure(tf.subtract, initial_weights.trainable, model_weights.trainable)
    update, has_non_finite = tensor_utils.zero_all_if_any_non_finite(update)
    if has_non_finite > 0:
      weight = tf.constant(0.0, tf.float32)
      model.reset_metrics()
    elif weighting == tff.learning.ClientWeighting.NUM_EXAMPLES:
      weight = tf.cast(num_examples, tf.float32)
    else:
      weight = tf.constant(1.0, tf.float32)
    return (tff.learning.templates.ClientResult(update=update, update_weight=weight),
            model.report_local_unfinalized_metrics())

  return client_update


def build_dp_sgd_client_work(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    optimizer: tff.learning.optimizers.Optimizer,
    per_example_loss: LossArg,
    l2_norm_clip: float,
    noise_multiplier: float,
    client_weighting: tff.learning.ClientWeighting = tff.learning.ClientWeighting.UNIFORM,
    metrics_aggregator: Optional[tff.learning.metrics.MetricsAggregatorType] = None,
) -> tff.learning.templates.ClientWorkProcess:
  """Local DP-SGD client work. State: the optimizer's hparams (as the stock model-delta client work).

  Args:
    model_fn: no-arg callable building a fresh `tff.learning.models.VariableModel`.
    optimizer: the local `tff.learning.optimizers.Optimizer`, applied to the noised mean gradient.
    per_example_loss: the model's training loss as a `tf.keras.losses.Loss` (its unreduced `call` is used) or a
      callable (labels, predictions) -> per-example losses [B], e.g. `tf.keras.losses.sparse_categorical_crossentropy`.
    l2_norm_clip: per-example gradient clip norm C (> 0).
    noise_multiplier: z >= 0; noise stddev on each batch's summed gradient is z * C.
    client_weighting: `UNIFORM` (default: the weight reveals nothing about the data) or `NUM_EXAMPLES`.
    metrics_aggregator: as in `tff.learning.templates.build_model_delta_client_work`.
  """
  if not isinstance(l2_norm_clip, (int, float)) or not l2_norm_clip > 0:
    raise ValueError(f'l2_norm_clip must be a positive number, got {l2_norm_clip!r}.')
  if not isinstance(noise_multiplier, (int, float)) or not noise_multiplier >= 0:
    raise ValueError(f'noise_multiplier must be a non-negative number, got {noise_multiplier!r}.')
  _per_example(per_example_loss)
  if not isinstance(client_weighting, tff.learning.ClientWeighting):
    raise ValueError(f'client_weighting must be a tff.learning.ClientWeighting, got {client_weighting!r}.')
  metrics_aggregator = metrics_aggregator or tff.learning.metrics.sum_then_finalize

  with tf.Graph().as_default():
    model = model_fn()
    metrics_aggregation_fn = metrics_aggregator(model.metric_finalizers())
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
  weights_type = tff.learning.models.weights_type_from_model(model)
  initial_hparams = optimizer.get_hparams(optimizer.initialize(tf.TensorSpec(shape=(), dtype=tf.float32)))

  @tff.federated_computation
  def init_fn():
    return tff.federated_value(initial_hparams, tff.SERVER)

  state_type = init_fn.type_signature.result.member

  @tff.tensorflow.computation(state_type)
  def get_hparams_fn(state):
    return state

  @tff.tensorflow.computation(state_type, state_type)
  def set_hparams_fn(state, hparams):
    del state
    return hparams

  @tff.tensorflow.computation(state_type, weights_type, data_type)
  def client_update_computation(hparams, initial_model_weights, dataset):
    client_update = build_dp_sgd_update(model_fn, per_example_loss, float(l2_norm_clip), float(noise_multiplier),
                                        client_weighting)
    return client_update(optimizer, initial_model_weights, dataset, hparams)

  @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(weights_type, tff.CLIENTS),
                             tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, client_data):
    client_result, model_outputs = tff.federated_map(
        client_update_computation, (tff.federated_broadcast(state), weights, client_data))
    measurements = tff.federated_zip(collections.OrderedDict(train=metrics_aggregation_fn(model_outputs)))
    return tff.templates.MeasuredProcessOutput(state, client_result, measurements)

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn, get_hparams_fn=get_hparams_fn,
                                                  set_hparams_fn=set_hparams_fn)


def build_dp_sgd_fed_avg(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    client_optimizer: tff.learning.optimizers.Optimizer,
    per_example_loss: LossArg,
    l2_norm_clip: float,
    noise_multiplier: float,
    server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
    model_aggregator: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
) -> tff.learning.templates.LearningProcess:
  """Unweighted FedAvg whose clients run local DP-SGD, composed from stock TFF templates.

  `model_aggregator` (default `UnweightedMeanFactory`) may itself be a client-level DP aggregator.
  """
  with tf.Graph().as_default():
    weights_type = tff.learning.models.weights_type_from_model(model_fn())

  @tff.tensorflow.computation()
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(model_fn())

  client_work = build_dp_sgd_client_work(model_fn, client_optimizer, per_example_loss, l2_norm_clip,
                                         noise_multiplier)
  aggregator = tff.aggregators.as_weighted_aggregator(
      model_aggregator or tff.aggregators.UnweightedMeanFactory()).create(
          weights_type.trainable, tff.TensorType(np.float32))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0), weights_type)
  return tff.learning.templates.compose_learning_process(
      initial_model_weights_fn, tff.learning.templates.build_broadcast_process(weights_type), client_work,
      aggregator, finalizer)
