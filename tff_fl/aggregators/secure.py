"""Secure summation with a chosen bit width and clip range, on TFF's `tff.aggregators.SecureSumFactory`.

`secure_sum(bits, clip_range)` (an `UnweightedAggregationFactory`, usable as e.g. the `value_sum_factory` of
`tff.aggregators.MeanFactory` or as the `inner` of our wrappers): each client clips every coordinate to
[-clip_range, clip_range], maps it to an integer in {0, ..., 2^bits - 1} with unbiased stochastic rounding, and
the integers are summed by `SecureSumFactory(2^bits - 1, 0)`, whose secure-aggregation bit width is exactly
`bits`. The server decodes sum_x = sum_q * 2r/(2^bits - 1) - n*r. Only the per-coordinate clipping biases it.

`secure_mean(bits, clip_range)` (a `WeightedAggregationFactory`, what `secure(b)>mean` builds): the weighted
mean sum_i w_i x_i / sum_i w_i, where clients first learn W = sum_i w_i and n (plain federated sums, then a
broadcast) and securely sum y_i = x_i * w_i * n / W, so `clip_range` bounds values on the scale of x itself
(y_i = x_i when all weights are equal) rather than of w_i * x_i; the result is sum_i y_i / n.

Measurements: OrderedDict(bits_per_client=bits*d, clipped_coordinates=<coordinates clipped, summed over
clients>, secure=<SecureSumFactory's measurements>). The client count and clipped count are summed with
`tff.federated_secure_sum_bitwidth` too; only `secure_mean`'s weights (W, as in TFF's MeanFactory) and client
count for the rescaling travel by plain `federated_sum`.

Runtime note: the C++ runtime has no secure-aggregation protocol and rejects the secure intrinsics. Simulate
them by lowering to plain sums with range checks, as `tff.backends.test` contexts do: either call
`tff.backends.test.replace_secure_intrinsics_with_bodies(process.next)` or use a context whose compiler does.
Robust aggregators (median, trimmed mean, Krum) cannot sit under secure sum: they need each client's value.
"""

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.aggregators import compression
from tff_fl.aggregators import flat

MAX_BITS = 16  # int32 sums of n clients stay exact for n < 2^(31 - bits).


def _check_args(bits, clip_range):
  if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
    raise ValueError(f'secure bits must be an int in [1, {MAX_BITS}]; got {bits!r}')
  if isinstance(clip_range, bool) or not isinstance(clip_range, (int, float)) or not clip_range > 0:
    raise ValueError(f'secure clip_range must be a float > 0; got {clip_range!r}')


class ClippedSecureSumFactory(tff.aggregators.UnweightedAggregationFactory):
  """Sum of client values, clipped per coordinate to [-clip_range, clip_range], over `bits`-bit SecAgg."""

  def __init__(self, bits: int, clip_range: float = 1.0, seed: Optional[int] = None):
    _check_args(bits, clip_range)
    self._bits = bits
    self._range = float(clip_range)
    self._seed = seed  # None: unseeded rounding; an int: keyed by `compression.value_key` (reproducible).

  def create(self, value_type) -> tff.templates.AggregationProcess:
    d = flat.flat_size(value_type)  # Also checks that value_type is a structure of floats.
    levels = 2**self._bits - 1
    r = self._range
    step = 2.0 * r / levels
    int_type = tff.to_type(tff.types.structure_from_tensor_type_tree(
        lambda t: tff.TensorType(np.int32, t.shape), value_type))
    secure = tff.aggregators.SecureSumFactory(levels, 0).create(int_type)
    bits_per_client = np.float32(self._bits * d)
    count_bits = flat.index_bits(d + 1)  # A client clips at most d coordinates.

    @tff.tensorflow.computation(value_type)
    def encode(value):
      def one(x, key):
        x = tf.cast(x, tf.float32)
        scaled = (tf.clip_by_value(x, -r, r) + r) / step
        q = tf.clip_by_value(compression.stochastic_round(scaled, key), 0.0, levels)
        return tf.cast(q, tf.int32), tf.reduce_sum(tf.cast(tf.abs(x) > r, tf.int32))

      pairs = [one(x, k) for x, k in zip(tf.nest.flatten(value), compression.leaf_keys(self._seed, value))]
      ints = tf.nest.pack_sequence_as(value, [q for q, _ in pairs])
      return ints, tf.add_n([c for _, c in pairs]), tf.constant(1, tf.int32)

    @tff.tensorflow.computation(int_type, np.int32)
    def decode(int_sum, count):
      n = tf.cast(count, tf.float32)
      decoded = [tf.cast(tf.cast(q, tf.float32) * step - n * r, t.dtype)
                 for q, t in zip(tf.nest.flatten(int_sum), flat.leaf_types(value_type))]
      return flat.pack_leaves(decoded, value_type)

    @tff.federated_computation
    def init_fn():
      return secure.initialize()

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      ints, clipped, ones = tff.federated_map(encode, value)
      out = secure.next(state, ints)
      count = tff.federated_secure_sum_bitwidth(ones, bitwidth=1)
      result = tff.federated_map(decode, (out.result, count))
      measurements = tff.federated_zip(collections.OrderedDict(
          bits_per_client=tff.federated_value(bits_per_client, tff.SERVER),
          clipped_coordinates=tff.federated_secure_sum_bitwidth(clipped, bitwidth=count_bits),
          secure=out.measurements))
      return tff.templates.MeasuredProcessOutput(state=out.state, result=result, measurements=measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)


class SecureMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """Weighted mean whose value sum runs over `bits`-bit SecAgg; `clip_range` bounds x_i * w_i * n / W."""

  def __init__(self, bits: int, clip_range: float = 1.0, seed: Optional[int] = None):
    self._sum_factory = ClippedSecureSumFactory(bits, clip_range, seed)

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    sum_process = self._sum_factory.create(value_type)

    @tff.tensorflow.computation(weight_type)
    def weight_and_one(weight):
      return tf.cast(weight, tf.float32), tf.constant(1.0, tf.float32)

    @tff.tensorflow.computation(value_type, np.float32, collections.OrderedDict(total=np.float32, n=np.float32))
    def rescale(value, weight, totals):
      factor = tf.math.divide_no_nan(weight * totals['n'], totals['total'])
      return tf.nest.map_structure(lambda x: x * tf.cast(factor, x.dtype), value)

    @tff.tensorflow.computation(sum_process.next.type_signature.result.result.member, np.float32)
    def divide(value_sum, n):
      return tf.nest.map_structure(lambda x: tf.math.divide_no_nan(x, tf.cast(n, x.dtype)), value_sum)

    @tff.federated_computation
    def init_fn():
      return sum_process.initialize()

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS),
                               tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      weight32, one = tff.federated_map(weight_and_one, weight)
      totals = tff.federated_zip(collections.OrderedDict(
          total=tff.federated_sum(weight32), n=tff.federated_sum(one)))
      scaled = tff.federated_map(rescale, (value, weight32, tff.federated_broadcast(totals)))
      out = sum_process.next(state, scaled)
      result = tff.federated_map(divide, (out.result, totals.n))
      return tff.templates.MeasuredProcessOutput(state=out.state, result=result, measurements=out.measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)


def secure_sum(bits: int, clip_range: float = 1.0, seed: Optional[int] = None) -> ClippedSecureSumFactory:
  """`bits`-bit secure sum of values clipped per coordinate to [-clip_range, clip_range]; `seed` keys the
  stochastic rounding (None: unseeded)."""
  return ClippedSecureSumFactory(bits, clip_range, seed)


def secure_mean(bits: int, clip_range: float = 1.0, seed: Optional[int] = None) -> SecureMeanFactory:
  """Weighted mean over `bits`-bit secure sum (see module docstring for the rescaling); `seed` as `secure_sum`."""
  return SecureMeanFactory(bits, clip_range, seed)
