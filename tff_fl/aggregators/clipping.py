"""L2-norm clipping and zeroing, fixed or adaptive: thin constructors over TFF's own robust factories.

All four return `tff.aggregators.clipping_factory` / `zeroing_factory` results, so their weightedness follows
`inner` (default `tff.aggregators.MeanFactory()`), they nest with any TFF factory in either direction, and
they report TFF's measurements:

  clip:    OrderedDict(clipping=<inner>, clipping_norm=float32, clipped_count=int32)
  zeroing: OrderedDict(zeroing=<inner>, zeroing_norm=float32, zeroed_count=int32)

The clip rate of a round is clipped_count / cohort size. Adaptive variants estimate the norm with
`tff.aggregators.PrivateQuantileEstimationProcess.no_noise` (geometric updates, Andrew et al. 2021): the norm
tracks the `target_quantile` of client update norms; adaptive zeroing uses multiplier*quantile + increment,
as `tff.learning.robust_aggregator` does. Client values must be floats (the learning model delta is).
"""

from typing import Optional

import tensorflow_federated as tff


def _inner(inner):
  return tff.aggregators.MeanFactory() if inner is None else inner


def _positive(name: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    raise ValueError(f'{name} must be a float > 0; got {value!r}')
  return float(value)


def _quantile(name: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
    raise ValueError(f'{name} target_quantile must be a float in (0, 1); got {value!r}')
  return float(value)


def clip(norm: float, inner: Optional[tff.aggregators.AggregationFactory] = None):
  """Projects each client value onto the L2 ball of radius `norm`, then aggregates with `inner`."""
  return tff.aggregators.clipping_factory(_positive('clip norm', norm), _inner(inner))


def adaptive_clip(target_quantile: float, inner: Optional[tff.aggregators.AggregationFactory] = None,
                  initial_norm: float = 1.0, learning_rate: float = 0.2):
  """L2 clipping at a norm that tracks the `target_quantile` of client value norms."""
  process = tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
      initial_estimate=_positive('adaptive_clip initial_norm', initial_norm),
      target_quantile=_quantile('adaptive_clip', target_quantile),
      learning_rate=_positive('adaptive_clip learning_rate', learning_rate))
  return tff.aggregators.clipping_factory(process, _inner(inner))


def zeroing(norm: float, inner: Optional[tff.aggregators.AggregationFactory] = None):
  """Replaces client values whose L2 norm exceeds `norm` by zeros (weight kept), then `inner`."""
  return tff.aggregators.zeroing_factory(_positive('zeroing norm', norm), _inner(inner), norm_order=2.0)


def adaptive_zeroing(target_quantile: float, inner: Optional[tff.aggregators.AggregationFactory] = None,
                     initial_norm: float = 10.0, multiplier: float = 2.0, increment: float = 1.0,
                     learning_rate: float = 0.2):
  """Zeroing above multiplier * (`target_quantile` of norms) + increment, as TFF's robust_aggregator."""
  process = tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
      initial_estimate=_positive('adaptive_zeroing initial_norm', initial_norm),
      target_quantile=_quantile('adaptive_zeroing', target_quantile),
      learning_rate=_positive('adaptive_zeroing learning_rate', learning_rate),
      multiplier=_positive('adaptive_zeroing multiplier', multiplier), increment=float(increment))
  return tff.aggregators.zeroing_factory(process, _inner(inner), norm_order=2.0)
