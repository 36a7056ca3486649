"""Lossy uplink compression stages: stochastic b-bit quantization and top-k sparsification.

Each stage is a wrapper factory (same weightedness as its `inner`, default `tff.aggregators.MeanFactory()`)
that encodes every client value at CLIENTS and hands the decoded value to `inner`; the simulation moves the
decoded floats, and the bits the encoding would put on the wire are reported in the measurements:

  OrderedDict(bits_per_client=float32, dense_bits_per_client=float32, inner=<inner measurements>)

`dense_bits_per_client` is 32*d (d = number of parameters), so `bits_per_client / dense_bits_per_client` is the
compression ratio. Costs are per stage and per round, for the stage's own input.

* `quantize(bits)`: per leaf tensor with range [lo, hi], every coordinate is mapped to {0, ..., 2^b - 1} on
  the grid lo + q*(hi - lo)/(2^b - 1) by stochastic rounding, which is unbiased: E[decode(q)] = x. Wire
  cost: b bits per coordinate plus lo and hi as two float32 per leaf.
* `topk(fraction)`: keeps the k = max(1, ceil(fraction*d)) largest-magnitude coordinates of the flattened
  value (ties: lower index first), zeroes the rest; stateless and biased (error feedback needs client state).
  Wire cost: k * (32 value bits + ceil(log2 d) index bits).
"""

import collections
import math
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.aggregators import flat


def stochastic_round(y: tf.Tensor, seed=None) -> tf.Tensor:
  """floor(y + u), u ~ U[0, 1): ceil(y) with probability y - floor(y), else floor(y); so E = y (unbiased).

  `seed` None: an unseeded op, a fresh random stream per call and client, like TFF's own stochastic discretization;
  an int64[2] tensor: the stateless stream of that seed (reproducible).
  """
  u = (tf.random.uniform(tf.shape(y), dtype=y.dtype) if seed is None
       else tf.random.stateless_uniform(tf.shape(y), seed, dtype=y.dtype))
  return tf.floor(y + u)


_KEY_COORDINATES = 64  # Coordinates per leaf that `value_key` reads.
_KEY_DROPPED_BITS = 15  # Low mantissa bits it ignores (float32 keeps 8 of 23).


def value_key(seed: int, value) -> tf.Tensor:
  """int64[2] key of the rounding of a client `value` (a structure of float tensors) when the stage has a `seed`
  (an aggregator does not know which client a value is from): [seed, hash of the value]. The hash reads 64 evenly
  spaced coordinates per leaf to 8 mantissa bits, so two clients' values get independent-looking streams unless
  they agree there to ~0.4%, while the last-bit differences that float summation order makes upstream (other slot,
  worker or engine layouts) change it with probability ~2^-15 per coordinate read: a seeded run repeats."""
  digest = tf.constant(0, tf.int64)
  for leaf in tf.nest.flatten(value):
    if leaf.shape.num_elements() == 0:
      continue
    flat = tf.reshape(tf.cast(leaf, tf.float32), [-1])
    size = tf.size(flat)
    picks = tf.cast(tf.linspace(0.0, tf.cast(tf.maximum(size - 1, 0), tf.float32), _KEY_COORDINATES), tf.int32)
    picks = tf.minimum(picks, tf.maximum(size - 1, 0))
    coarse = tf.bitwise.bitwise_and(tf.bitcast(tf.gather(flat, picks), tf.int32), -(1 << _KEY_DROPPED_BITS))
    bits = tf.math.floormod(tf.cast(coarse, tf.int64), 2**31)
    mixed = tf.math.floormod(tf.range(_KEY_COORDINATES, dtype=tf.int64) * 2654435761 + 40503, 2**31)
    digest = tf.math.floormod(digest * 1000003 + tf.reduce_sum(tf.math.floormod(bits * mixed, 2**31)), 2**31)
  return tf.stack([tf.constant(seed, tf.int64), digest])


def leaf_keys(seed: Optional[int], value) -> list:
  """Per leaf of `value`, the int64[2] key of its rounding: `value_key(seed, value)` folded with the leaf's index;
  all None when `seed` is None (unseeded rounding)."""
  leaves = tf.nest.flatten(value)
  if seed is None:
    return [None] * len(leaves)
  base = value_key(seed, value)
  return [tf.random.experimental.stateless_fold_in(base, i) for i in range(len(leaves))]


def _stochastic_quantize(x: tf.Tensor, bits: int, key=None) -> tf.Tensor:
  """Unbiased stochastic rounding of `x` to a (2^bits)-level grid on [min(x), max(x)]; returns decoded floats.
  `key`: int64[2] stateless key of the rounding (None: unseeded)."""
  levels = float(2**bits - 1)
  x32 = tf.cast(x, tf.float32)
  lo, hi = tf.reduce_min(x32), tf.reduce_max(x32)
  step = (hi - lo) / levels
  safe_step = tf.where(step > 0.0, step, 1.0)
  scaled = (x32 - lo) / safe_step
  q = tf.clip_by_value(stochastic_round(scaled, key), 0.0, levels)
  decoded = tf.where(step > 0.0, lo + q * step, x32)
  return tf.cast(decoded, x.dtype)


def _top_k_sparsify(vector: tf.Tensor, k: int, skip_sparse: bool = True) -> tf.Tensor:
  """Keeps the `k` largest-|.| entries of the 1-D `vector` (lower index first on ties), zeroes the rest. With
  `skip_sparse`, a vector with at most `k` nonzeros is returned as is (its top-k; skips the O(d log k) selection,
  e.g. for the already sparse uploads of error feedback); without it (a dense vector, e.g. error feedback's
  corrected update) no count and no branch: on the engine's client axis a per-client branch splits the clients."""
  def select():
    _, indices = tf.math.top_k(tf.abs(vector), k=k, sorted=False)
    return tf.scatter_nd(indices[:, tf.newaxis], tf.gather(vector, indices), tf.shape(vector))

  if not skip_sparse:
    return select()
  sparse = tf.math.count_nonzero(vector, dtype=tf.int32) <= k
  return tf.cond(sparse, lambda: tf.identity(vector), select)


class _ClientEncodingFactory:
  """Wrapper logic shared by the compression stages: encode/decode at CLIENTS, then delegate to `inner`."""

  def __init__(self, inner, encode_fn: Callable, bits_fn: Callable[[object], float]):
    if not isinstance(inner, (tff.aggregators.WeightedAggregationFactory,
                              tff.aggregators.UnweightedAggregationFactory)):
      raise TypeError(f'inner must be a tff.aggregators factory; got {type(inner).__name__}')
    self._inner = inner
    self._encode_fn = encode_fn  # (value, value_type) -> decoded value, traced in TF at CLIENTS.
    self._bits_fn = bits_fn  # value_type -> wire bits per client.

  def _create(self, value_type, weight_type=None) -> tff.templates.AggregationProcess:
    dense_bits = 32.0 * flat.flat_size(value_type)
    bits = float(self._bits_fn(value_type))
    inner = (self._inner.create(value_type) if weight_type is None
             else self._inner.create(value_type, weight_type))
    encode = tff.tensorflow.computation(lambda value: self._encode_fn(value, value_type), value_type)

    @tff.federated_computation
    def init_fn():
      return inner.initialize()

    def output(out):
      measurements = tff.federated_zip(collections.OrderedDict(
          bits_per_client=tff.federated_value(np.float32(bits), tff.SERVER),
          dense_bits_per_client=tff.federated_value(np.float32(dense_bits), tff.SERVER),
          inner=out.measurements))
      return tff.templates.MeasuredProcessOutput(state=out.state, result=out.result, measurements=measurements)

    state_type = init_fn.type_signature.result
    clients_value = tff.FederatedType(value_type, tff.CLIENTS)
    if weight_type is None:

      @tff.federated_computation(state_type, clients_value)
      def next_fn(state, value):
        return output(inner.next(state, tff.federated_map(encode, value)))

    else:

      @tff.federated_computation(state_type, clients_value, tff.FederatedType(weight_type, tff.CLIENTS))
      def next_fn(state, value, weight):
        return output(inner.next(state, tff.federated_map(encode, value), weight))

    return tff.templates.AggregationProcess(init_fn, next_fn)


class _WeightedEncodingFactory(_ClientEncodingFactory, tff.aggregators.WeightedAggregationFactory):

  def create(self, value_type, weight_type):
    return self._create(value_type, weight_type)


class _UnweightedEncodingFactory(_ClientEncodingFactory, tff.aggregators.UnweightedAggregationFactory):

  def create(self, value_type):
    return self._create(value_type)


def _wrap(inner, encode_fn, bits_fn):
  inner = tff.aggregators.MeanFactory() if inner is None else inner
  if isinstance(inner, tff.aggregators.WeightedAggregationFactory):
    return _WeightedEncodingFactory(inner, encode_fn, bits_fn)
  return _UnweightedEncodingFactory(inner, encode_fn, bits_fn)


def quantize(bits: int, inner: Optional[tff.aggregators.AggregationFactory] = None, seed: Optional[int] = None):
  """Unbiased stochastic `bits`-bit quantization (1 <= bits <= 16) of each client value, then `inner`. `seed`
  None: unseeded rounding (fresh per call); an int: rounding keyed by (`value_key(seed, value)`, leaf), reproducible."""
  if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 16:
    raise ValueError(f'quantize bits must be an int in [1, 16]; got {bits!r}')

  def encode(value, value_type):
    del value_type  # Per-leaf encoding.
    return tf.nest.pack_sequence_as(value, [_stochastic_quantize(x, bits, k) for x, k in
                                            zip(tf.nest.flatten(value), leaf_keys(seed, value))])

  def wire_bits(value_type):
    return bits * flat.flat_size(value_type) + 64 * len(flat.leaf_types(value_type))

  return _wrap(inner, encode, wire_bits)


def topk(fraction: float, inner: Optional[tff.aggregators.AggregationFactory] = None):
  """Top-k sparsification keeping ceil(`fraction`*d) coordinates (0 < fraction <= 1), then `inner`."""
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
    raise ValueError(f'topk fraction must be a float in (0, 1]; got {fraction!r}')

  def num_kept(value_type):
    return max(1, math.ceil(fraction * flat.flat_size(value_type)))

  def encode(value, value_type):
    sparse = _top_k_sparsify(flat.flatten_value(value), num_kept(value_type))
    return flat.unflatten_value(sparse, value_type)

  def wire_bits(value_type):
    d = flat.flat_size(value_type)
    return num_kept(value_type) * (32 + flat.index_bits(d))

  return _wrap(inner, encode, wire_bits)
