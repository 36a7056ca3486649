"""Client weighting: by example count, uniform, or a user function of client-side statistics.

Where the weight comes from. In TFF the client work emits `ClientResult(update, update_weight)` and the
aggregator receives `update_weight` as its `weight`. Stock `tff.learning` client work emits a float32 number of
examples (or 1.0 under `ClientWeighting.UNIFORM`). For a researcher-defined weight, the client work emits any
structure of statistics as `update_weight` (e.g. `LOSS_STATS_TYPE` built with `loss_stats_zero` and
`accumulate_loss_stats` during local training) and `client_weighted(weight_fn)` maps it to a float32 scalar AT
CLIENTS with `weight_fn` (e.g. `inverse_loss_variance`) before the inner weighted aggregation:

    agg = client_weighted(inverse_loss_variance, inner=tff.aggregators.MeanFactory())
    process = agg.create(update_type, tff.to_type(LOSS_STATS_TYPE))

`client_weighted` measurements: OrderedDict(weight_sum=float32 (sum of mapped weights), inner=<inner>).
"""

import collections
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

LOSS_STATS_TYPE = collections.OrderedDict(num_examples=np.float32, loss_sum=np.float32, loss_sq_sum=np.float32)


def mean() -> tff.aggregators.WeightedAggregationFactory:
  """Weighted mean by the client work's weight (number of examples for stock `tff.learning` client work)."""
  return tff.aggregators.MeanFactory()


def uniform_mean() -> tff.aggregators.WeightedAggregationFactory:
  """Plain average over clients, ignoring whatever weight the client work sends."""
  return tff.aggregators.as_weighted_aggregator(tff.aggregators.UnweightedMeanFactory())


def loss_stats_zero() -> collections.OrderedDict:
  """Empty `LOSS_STATS_TYPE` accumulator (all zeros)."""
  return collections.OrderedDict((k, tf.constant(0.0, tf.float32)) for k in LOSS_STATS_TYPE)


def accumulate_loss_stats(stats, per_example_loss: tf.Tensor) -> collections.OrderedDict:
  """Adds a batch of per-example losses (float[batch]) to `stats` (a `LOSS_STATS_TYPE` structure)."""
  loss = tf.reshape(tf.cast(per_example_loss, tf.float32), [-1])
  return collections.OrderedDict(
      num_examples=stats['num_examples'] + tf.cast(tf.size(loss), tf.float32),
      loss_sum=stats['loss_sum'] + tf.reduce_sum(loss),
      loss_sq_sum=stats['loss_sq_sum'] + tf.reduce_sum(tf.square(loss)))


def loss_variance(stats) -> tf.Tensor:
  """Population variance of the client's per-example losses, from `LOSS_STATS_TYPE` statistics."""
  n = tf.maximum(stats['num_examples'], 1.0)
  mean_loss = stats['loss_sum'] / n
  return tf.maximum(stats['loss_sq_sum'] / n - tf.square(mean_loss), 0.0)


def inverse_loss_variance(stats, epsilon: float = 1e-3) -> tf.Tensor:
  """Weight 1 / (var(loss) + epsilon), zero for a client without examples: damps noisy clients."""
  return tf.where(stats['num_examples'] > 0.0, 1.0 / (loss_variance(stats) + epsilon), 0.0)


def example_count(stats) -> tf.Tensor:
  """Weight = number of examples, from `LOSS_STATS_TYPE` statistics (FedAvg's weighting)."""
  return stats['num_examples']


class ClientWeightedFactory(tff.aggregators.WeightedAggregationFactory):
  """Maps each client's `weight` structure to a float32 scalar with `weight_fn` at CLIENTS, then `inner`."""

  def __init__(self, weight_fn: Callable[[object], tf.Tensor],
               inner: Optional[tff.aggregators.WeightedAggregationFactory] = None):
    if not callable(weight_fn):
      raise ValueError(f'weight_fn must be callable (weight structure -> float32 scalar); got {weight_fn!r}')
    inner = tff.aggregators.MeanFactory() if inner is None else inner
    if not isinstance(inner, tff.aggregators.WeightedAggregationFactory):
      raise ValueError(f'client_weighted inner must be a WeightedAggregationFactory; got {type(inner).__name__}')
    self._weight_fn = weight_fn
    self._inner = inner

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:

    @tff.tensorflow.computation(weight_type)
    def to_scalar(weight):
      w = tf.convert_to_tensor(self._weight_fn(weight))
      if w.shape.rank != 0:
        raise ValueError(f'weight_fn must return a scalar; got shape {w.shape}')
      return tf.cast(w, tf.float32)

    inner = self._inner.create(value_type, to_scalar.type_signature.result)

    @tff.federated_computation
    def init_fn():
      return inner.initialize()

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS),
                               tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      scalar_weight = tff.federated_map(to_scalar, weight)
      out = inner.next(state, value, scalar_weight)
      measurements = tff.federated_zip(collections.OrderedDict(
          weight_sum=tff.federated_sum(scalar_weight), inner=out.measurements))
      return tff.templates.MeasuredProcessOutput(state=out.state, result=out.result, measurements=measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)


def client_weighted(weight_fn: Callable[[object], tf.Tensor],
                    inner: Optional[tff.aggregators.WeightedAggregationFactory] = None) -> ClientWeightedFactory:
  """Weighted aggregation with weight `weight_fn(client weight structure)`, computed at CLIENTS."""
  return ClientWeightedFactory(weight_fn, inner)
