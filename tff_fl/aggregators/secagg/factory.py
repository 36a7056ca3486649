"""`tff.aggregators` factory running SecAgg / SecAgg+ (`protocol`) inside the round: a weighted mean.

Per client i (at CLIENTS): y_i = w_i * x_i (flattened, float32[d]) is clipped per coordinate to [-r, r] and
stochastically rounded onto L + 1 levels, L = floor((2^b - 1) / n) for a cohort of n sampled clients (so the sum
of any survivors' integers never wraps mod 2^b), q_i = floor((y_i + r) * L / 2r + u), u ~ U[0, 1) seeded by
(seed, round, position) (unbiased, and runs are bit-reproducible), in {0..L}; the client masks q_i
(`protocol.client_upload`). The server sums the masked vectors mod 2^b and recovers sum_{i in U} q_i
(`protocol.server_recover`), decodes sum_U y_i = S * 2r / L - |U| r and divides by sum_U w_i (the weights go by a
plain sum, as in TFF's MeanFactory with a secure value sum). With uniform client weighting y_i = x_i, so r bounds
the update's coordinates; with example-count weights r must bound w_i * x_i.

The protocol needs, per reporting client, its position among the round's sampled clients, the sampled count, the
round number and the survivor set the server announces: the engine passes them with each client's weight,
weight = OrderedDict(weight=float32, secagg=OrderedDict(index, n, round: int32, alive: int32[N])), from the
`tff_fl.algorithms.secagg_input.SecAggInput` extension (an `Extension` with `aggregator_input = True`). The
process is one-pass (one `federated_aggregate` with a modular accumulate), so it runs per real client on the
packed engine.

Arithmetic: int64 tensors with explicit floormod by 2^b (b <= 32) and by p = 2^31 - 1 (Shamir, DH): TF's
stateless PRG, floormod and products are all defined for int64, and int64 holds products of two field elements
(< 2^62) and sums of masked values exactly; uint32 would wrap for free mod 2^32 only, not for b < 32, and TF lacks
mod/multiply kernels for it.

Measurements: OrderedDict(secagg=OrderedDict(aborted=0|1, survivors, threshold (t), sampled (n),
clipped_coordinates, masked_bits, share_bits, bits_per_client)). A round with fewer than t surviving holders
(for any owner) aborts: result zeros and aborted=1; the engine then keeps the whole server state
(`tff_fl.engine.process`).
"""

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.aggregators import compression
from tff_fl.aggregators import flat
from tff_fl.aggregators.secagg import masking
from tff_fl.aggregators.secagg import protocol

INPUT_KEY = 'secagg'  # Key of the protocol's per-client inputs in the weight structure (the extension's name).
FIELD_BITS = 31


def check_args(bits, threshold, k, clip_range, max_clients) -> None:
  """ValueError naming the bad argument (the spec parser prefixes `aggregator=<spec>:`)."""
  if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= masking.MAX_BITS:
    raise ValueError(f'secagg bits must be an int in [1, {masking.MAX_BITS}]; got {bits!r}')
  if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
    raise ValueError(f'secagg threshold must be a fraction in (0, 1]; got {threshold!r}')
  if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
    raise ValueError(f'secagg_plus k (neighbours) must be an int >= 1; got {k!r}')
  if isinstance(clip_range, bool) or not isinstance(clip_range, (int, float)) or not clip_range > 0:
    raise ValueError(f'secagg clip_range must be a float > 0; got {clip_range!r}')
  if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
    raise ValueError(f'secagg max_clients (the sampled cohort size) must be an int >= 1; got {max_clients!r}')
  if 2**bits - 1 < max_clients:
    raise ValueError(f'secagg bits={bits} leave no quantization levels for {max_clients} clients: need '
                     f'2^bits - 1 >= clients')


def input_type(max_clients: int) -> collections.OrderedDict:
  """Type of the per-client protocol inputs (one client)."""
  return collections.OrderedDict(index=np.int32, n=np.int32, round=np.int32,
                                 alive=tff.TensorType(np.int32, [max_clients]))


class SecAggMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """Weighted mean over simulated SecAgg (k None) or SecAgg+ (k neighbours); see the module docstring."""

  def __init__(self, bits: int, threshold: float, *, max_clients: int, k: Optional[int] = None,
               clip_range: float = 1.0, seed: int = 0):
    check_args(bits, threshold, k, clip_range, max_clients)
    self.bits, self.threshold, self.k, self.max_clients = bits, float(threshold), k, max_clients
    self.clip_range, self.seed = float(clip_range), int(seed)

  def _protocol_args(self, round_num):
    return dict(bits=self.bits, threshold=self.threshold, k=self.k, seed=self.seed, round_num=round_num,
                max_clients=self.max_clients)

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    weight_type = tff.to_type(weight_type)
    names = list(tff.structure.name_list(weight_type)) if isinstance(weight_type, tff.StructType) else []
    if names != ['weight', INPUT_KEY]:
      raise TypeError('secagg needs each client\'s protocol inputs with its weight (OrderedDict(weight, secagg)): run '
                      'it on the packed engine with the SecAggInput extension (tff_fl.algorithms.secagg_input); got '
                      f'weight type {weight_type}.')
    d = flat.flat_size(value_type)
    bits, r, big_n = self.bits, self.clip_range, self.max_clients

    def levels(n):
      return tf.math.floordiv(tf.constant(2**bits - 1, tf.int64), tf.maximum(tf.cast(n, tf.int64), 1))

    @tff.tensorflow.computation(value_type, weight_type)
    def client_fn(value, weight):
      info = weight[INPUT_KEY]
      w = tf.cast(weight['weight'], tf.float32)
      y = flat.flatten_value(value) * w
      num_levels = tf.cast(levels(info['n']), tf.float32)
      scaled = (tf.clip_by_value(y, -r, r) + r) * num_levels / (2.0 * r)
      # Stochastic rounding seeded by (seed, round, position): runs are bit-reproducible, also across a resume.
      key = tf.stack([tf.constant(self.seed, tf.int64) * 7919 + 17,
                      tf.cast(info['round'], tf.int64) * big_n + tf.cast(info['index'], tf.int64)])
      q = tf.cast(tf.clip_by_value(compression.stochastic_round(scaled, key), 0.0, num_levels), tf.int64)
      masked, shares = protocol.client_upload(q, info['index'], info['n'], info['alive'],
                                              **self._protocol_args(info['round']))
      return collections.OrderedDict(
          masked=tf.ensure_shape(masked, [d]), shares=tf.ensure_shape(shares, [big_n]), index=info['index'], n=info['n'], round=info['round'], weight=w,
          clipped=tf.reduce_sum(tf.cast(tf.abs(y) > r, tf.int32)))

    contribution_type = client_fn.type_signature.result

    def zero_value():
      return collections.OrderedDict(
          masked=tf.zeros([d], tf.int64), shares=tf.zeros([big_n, big_n], tf.int64),
          alive=tf.zeros([big_n], tf.int32), n=tf.constant(0, tf.int32), round=tf.constant(0, tf.int32),
          weight=tf.constant(0.0, tf.float32), clipped=tf.constant(0, tf.int32))

    @tff.tensorflow.computation
    def zero():
      return zero_value()

    accumulator_type = zero.type_signature.result

    @tff.tensorflow.computation(accumulator_type, contribution_type)
    def accumulate(acc, c):
      row = tf.reshape(c['index'], [1, 1])
      return collections.OrderedDict(
          masked=masking.mod_bits(acc['masked'] + c['masked'], bits),
          shares=tf.tensor_scatter_nd_add(acc['shares'], row, c['shares'][tf.newaxis]),
          alive=tf.tensor_scatter_nd_add(acc['alive'], row, tf.ones([1], tf.int32)),
          n=tf.maximum(acc['n'], c['n']), round=tf.maximum(acc['round'], c['round']),
          weight=acc['weight'] + c['weight'], clipped=acc['clipped'] + c['clipped'])

    @tff.tensorflow.computation(accumulator_type, accumulator_type)
    def merge(a, b):
      return collections.OrderedDict(
          masked=masking.mod_bits(a['masked'] + b['masked'], bits), shares=a['shares'] + b['shares'],
          alive=a['alive'] + b['alive'], n=tf.maximum(a['n'], b['n']), round=tf.maximum(a['round'], b['round']),
          weight=a['weight'] + b['weight'], clipped=a['clipped'] + b['clipped'])

    @tff.tensorflow.computation(accumulator_type)
    def report(acc):
      return acc

    @tff.tensorflow.computation(accumulator_type)
    def server_fn(acc):
      total, aborted, survivors, t = protocol.server_recover(
          acc['masked'], acc['shares'], tf.minimum(acc['alive'], 1), acc['n'], **self._protocol_args(acc['round']))
      step = 2.0 * r / tf.cast(levels(acc['n']), tf.float64)
      value_sum = tf.cast(total, tf.float64) * step - tf.cast(survivors, tf.float64) * r
      mean = tf.ensure_shape(tf.math.divide_no_nan(tf.cast(value_sum, tf.float32), acc['weight']), [d])
      mean = tf.where(aborted, tf.zeros_like(mean), mean)
      n = acc['n']
      deg = tf.minimum(n - 1, 2 * ((self.k + 1) // 2)) if self.k is not None else n - 1
      masked_bits = tf.constant(float(d * bits), tf.float32)
      share_bits = tf.cast(FIELD_BITS * (1 + 2 * deg + deg + 1), tf.float32)
      measurements = collections.OrderedDict(
          aborted=tf.cast(aborted, tf.int32), survivors=survivors, threshold=t, sampled=n,
          clipped_coordinates=acc['clipped'], masked_bits=masked_bits, share_bits=share_bits,
          bits_per_client=masked_bits + share_bits)
      return flat.unflatten_value(mean, value_type), collections.OrderedDict(secagg=measurements)

    @tff.federated_computation
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS),
                               tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      contributions = tff.federated_map(client_fn, (value, weight))
      summed = tff.federated_aggregate(contributions, zero(), accumulate, merge, report)
      out = tff.federated_map(server_fn, summed)
      return tff.templates.MeasuredProcessOutput(state=state, result=out[0], measurements=out[1])

    return tff.templates.AggregationProcess(init_fn, next_fn)


def secagg_mean(bits: int, threshold: float, *, max_clients: int, clip_range: float = 1.0,
                seed: int = 0) -> SecAggMeanFactory:
  """Weighted mean over simulated SecAgg (Bonawitz et al. 2017): b-bit masks, t = ceil(threshold * n) of n."""
  return SecAggMeanFactory(bits, threshold, max_clients=max_clients, clip_range=clip_range, seed=seed)


def secagg_plus_mean(bits: int, threshold: float, k: int, *, max_clients: int, clip_range: float = 1.0,
                     seed: int = 0) -> SecAggMeanFactory:
  """Weighted mean over simulated SecAgg+ (Bell et al. 2020): masks with ~k graph neighbours, t of degree + 1."""
  return SecAggMeanFactory(bits, threshold, max_clients=max_clients, k=k, clip_range=clip_range, seed=seed)
