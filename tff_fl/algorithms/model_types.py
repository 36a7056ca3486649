"""Types and stock pieces every round needs: model weights / dataset types, initial weights, the model aggregator."""

from typing import Callable, Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

ModelFn = Callable[[], tff.learning.models.VariableModel]
AnyFactory = Union[tff.aggregators.WeightedAggregationFactory, tff.aggregators.UnweightedAggregationFactory]


def model_types(model_fn: ModelFn):
  """(model weights type, client dataset type, metric finalizers) of the model built by `model_fn`."""
  with tf.Graph().as_default():
    model = model_fn()
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
  weights_type = tff.learning.models.weights_type_from_model(model)
  return weights_type, data_type, model.metric_finalizers()


def initial_weights_computation(model_fn: ModelFn) -> tff.Computation:
  """`( -> ModelWeights)`: weights of a freshly built model."""

  @tff.tensorflow.computation()
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(model_fn())

  return initial_model_weights_fn


def build_model_aggregator(model_aggregator: Optional[AnyFactory], update_type,
                           weight_type=None) -> tff.templates.AggregationProcess:
  """Creates the weighted aggregation process for `update_type`; unweighted factories ignore the weights.
  `weight_type`: float32 (default), or a structure when an extension sends aggregator inputs with the weight."""
  if model_aggregator is None:
    model_aggregator = tff.aggregators.MeanFactory()
  if isinstance(model_aggregator, tff.aggregators.UnweightedAggregationFactory):
    model_aggregator = tff.aggregators.as_weighted_aggregator(model_aggregator)
  if not isinstance(model_aggregator, tff.aggregators.WeightedAggregationFactory):
    raise TypeError('model_aggregator must be a tff.aggregators.WeightedAggregationFactory or '
                    f'UnweightedAggregationFactory; got {type(model_aggregator).__name__}.')
  aggregator = model_aggregator.create(update_type, tff.TensorType(np.float32) if weight_type is None else weight_type)
  params = aggregator.next.type_signature.parameter
  if params[1].member != aggregator.next.type_signature.result[1].member:
    raise TypeError('model_aggregator must return values of the type it receives; got '
                    f'{params[1].member} -> {aggregator.next.type_signature.result[1].member}.')
  return aggregator
