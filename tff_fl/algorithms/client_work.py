"""Client work: local training from the broadcast model, returning the model delta and its weight.

One builder covers FedAvg (mu = 0) and FedProx (mu > 0: the gradient of (mu/2)||w - w_0||^2 is added at every step,
as in Li et al. 2020 and TFF's `proximal_client_work`). The loop mirrors TFF's `model_delta_client_work` step for
step (dataset reduce, TFF optimizer, non-finite guard), so with the same optimizer, data order and initial weights it
gives the same update.

Shapes: `update` = initial - final trainable weights (structure of the trainable weights); `update_weight` is a
float32 scalar: examples seen (NUM_EXAMPLES), 1 (UNIFORM), or 0 when the update was not finite (update zeroed).
"""

import collections
from typing import Callable

import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.learning import tensor_utils

ClientWeighting = tff.learning.ClientWeighting
ModelFn = Callable[[], tff.learning.models.VariableModel]


def client_weight(weighting: ClientWeighting, has_non_finite, num_examples):
  """float32 weight of one client's update; 0 for a non-finite update."""
  if weighting == ClientWeighting.NUM_EXAMPLES:
    weight = tf.cast(num_examples, tf.float32)
  elif weighting == ClientWeighting.UNIFORM:
    weight = tf.constant(1.0, tf.float32)
  else:
    raise ValueError(f'client_weighting must be NUM_EXAMPLES or UNIFORM; got {weighting}.')
  return tf.where(has_non_finite > 0, tf.constant(0.0, tf.float32), weight)


def build_local_sgd_fn(model: tff.learning.models.VariableModel, *, weighting: ClientWeighting,
                       proximal_mu: float = 0.0, with_correction: bool = False):
  """A `tf.function` (optimizer, initial ModelWeights, dataset[, correction]) -> (OrderedDict, unfinalized metrics).

  The one local-training loop of the package (FedAvg, FedProx, SCAFFOLD, FedDyn, FedNova, FedPer, Ditto, error
  feedback). Per minibatch: gradient of the model loss, plus `proximal_mu * (w - anchor)` (FedProx; `anchor` defaults
  to the initial weights, Ditto passes the global model), plus `correction` if
  `with_correction` (SCAFFOLD's c - c_i, structure of the trainable weights); one optimizer step. Returns
  OrderedDict(update=initial - final trainable weights (zeroed if not finite), update_weight=float32,
  num_steps=float32 minibatches, finite=float32 1/0, loss=float32 mean local loss, num_examples=float32).
  """
  @tf.function
  def local_train(optimizer, initial_weights, data, correction=None, anchor=None):
    weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda a, b: a.assign(b), weights, initial_weights)

    def reduce_fn(state, batch):
      num_examples, num_steps, loss_sum, opt_state = state
      with tf.GradientTape() as tape:
        output = model.forward_pass(batch, training=True)
      grads = tape.gradient(output.loss, weights.trainable)
      if proximal_mu > 0.0:
        grads = tf.nest.map_structure(lambda g, w, w0: g + proximal_mu * (w - w0), grads, weights.trainable,
                                      (initial_weights if anchor is None else anchor).trainable)
      if with_correction:
        grads = tf.nest.map_structure(tf.add, grads, correction)
      opt_state, updated = optimizer.next(
          opt_state, tuple(tf.nest.flatten(weights.trainable)), tuple(tf.nest.flatten(grads)))
      updated = tf.nest.pack_sequence_as(weights.trainable, updated)
      tf.nest.map_structure(lambda a, b: a.assign(b), weights.trainable, updated)
      if output.num_examples is None:
        batch_size = tf.shape(output.predictions, out_type=tf.int64)[0]
      else:
        batch_size = tf.cast(output.num_examples, tf.int64)
      loss_sum += tf.cast(output.loss, tf.float64) * tf.cast(batch_size, tf.float64)
      return num_examples + batch_size, num_steps + 1, loss_sum, opt_state

    specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in tf.nest.flatten(weights.trainable))
    init = (tf.zeros([], tf.int64), tf.zeros([], tf.int64), tf.zeros([], tf.float64), optimizer.initialize(specs))
    num_examples, num_steps, loss_sum, _ = data.reduce(init, reduce_fn)
    delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable, weights.trainable)
    delta, has_non_finite = tensor_utils.zero_all_if_any_non_finite(delta)
    unfinalized = model.report_local_unfinalized_metrics()
    loss = loss_sum / tf.maximum(tf.cast(num_examples, tf.float64), 1.0)  # Example-weighted mean training loss.
    result = collections.OrderedDict(
        update=delta,
        update_weight=client_weight(weighting, has_non_finite, num_examples),
        num_steps=tf.cast(num_steps, tf.float32),
        finite=tf.cast(tf.equal(has_non_finite, 0), tf.float32),
        loss=tf.cast(loss, tf.float32),
        num_examples=tf.cast(num_examples, tf.float32))
    return result, unfinalized

  return local_train


def build_local_training_fn(model: tff.learning.models.VariableModel, *, weighting: ClientWeighting,
                            proximal_mu: float = 0.0):
  """A `tf.function` (optimizer, initial ModelWeights, dataset) -> (ClientResult, unfinalized metrics)."""
  local_sgd = build_local_sgd_fn(model, weighting=weighting, proximal_mu=proximal_mu)

  @tf.function
  def client_update(optimizer, initial_weights, data):
    out, unfinalized = local_sgd(optimizer, initial_weights, data)
    return tff.learning.templates.ClientResult(update=out['update'], update_weight=out['update_weight']), unfinalized

  return client_update


def model_types(model_fn: ModelFn):
  """(model weights type, client dataset type, metric finalizers) of the model built by `model_fn`."""
  with tf.Graph().as_default():
    model = model_fn()
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
  weights_type = tff.learning.models.weights_type_from_model(model)
  return weights_type, data_type, model.metric_finalizers()


def build_client_work_process(client_tf_fn: Callable, model_fn: ModelFn,
                              metrics_aggregator=None) -> tff.learning.templates.ClientWorkProcess:
  """Wraps `client_tf_fn(weights, dataset) -> (ClientResult, unfinalized metrics)` (built inside a
  `tff.tf_computation`) as a stateless `ClientWorkProcess` whose measurements are `OrderedDict(train=metrics)`."""
  weights_type, data_type, finalizers = model_types(model_fn)
  metrics_aggregator = metrics_aggregator or tff.learning.metrics.sum_then_finalize
  with tf.Graph().as_default():
    metrics_fn = metrics_aggregator(finalizers, )

  @tff.tensorflow.computation(weights_type, data_type)
  def client_update(initial_weights, dataset):
    return client_tf_fn(initial_weights, dataset)

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


def build_local_training_client_work(model_fn: ModelFn, client_optimizer: tff.learning.optimizers.Optimizer, *,
                                     client_weighting: ClientWeighting = ClientWeighting.NUM_EXAMPLES,
                                     proximal_mu: float = 0.0,
                                     metrics_aggregator=None) -> tff.learning.templates.ClientWorkProcess:
  """`ClientWorkProcess` for FedAvg (proximal_mu=0) and FedProx (proximal_mu>0)."""
  if not isinstance(client_optimizer, tff.learning.optimizers.Optimizer):
    raise TypeError(f'client_optimizer must be a tff.learning.optimizers.Optimizer; got {type(client_optimizer)}.')
  if proximal_mu < 0:
    raise ValueError(f'--mu (proximal_mu) must be >= 0; got {proximal_mu}.')

  def client_tf_fn(initial_weights, dataset):
    local_train = build_local_training_fn(model_fn(), weighting=client_weighting, proximal_mu=float(proximal_mu))
    return local_train(client_optimizer, initial_weights, dataset)

  return build_client_work_process(client_tf_fn, model_fn, metrics_aggregator)
