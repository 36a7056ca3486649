"""tensorflow-privacy's Gaussian DP queries with reproducible noise: same `seed`, same noise, also after a resume.

tensorflow-privacy 0.9's `GaussianSumQuery` draws its noise with an unseeded `tf.random_normal_initializer`, so two
DP runs with the same `--seed` differ. Here the noise of the r-th release (r = 0, 1, ...) for the i-th tensor is
`tf.random.stateless_normal(shape, key_{r,i})` with `key_{r,i} = fold_in(fold_in([seed, stream], r), i)`, and r is
part of the query's global state -- hence of the aggregator state that checkpoints store, so a resumed run draws
exactly the noise an uninterrupted one would. Distributions, clipping, adaptation and DP events are tfp's.

The noise is a pseudo-random function of a seed, which is what a simulation needs (repeatable experiments); a
deployment should draw noise from a secure source (TFF's stock factories, `seed=None` in `aggregators.privacy`).
"""

import collections

import dp_accounting
import tensorflow as tf
import tensorflow_privacy as tfp

VALUE_STREAM, COUNT_STREAM = 0, 1  # Separate noise streams of the adaptive query's value sum and clipped count.


def _key(seed: int, stream: int) -> tf.Tensor:
  return tf.constant([seed, stream], tf.int64)


class SeededGaussianSumQuery(tfp.GaussianSumQuery):
  """`GaussianSumQuery` (clip each record to L2 norm `l2_norm_clip`, sum, add N(0, stddev^2) per coordinate) whose
  noise is keyed by (seed, stream, releases so far). Global state: (l2_norm_clip, stddev, releases: int64)."""

  _GlobalState = collections.namedtuple('_GlobalState', ['l2_norm_clip', 'stddev', 'releases'])

  def __init__(self, l2_norm_clip: float, stddev: float, seed: int, stream: int = VALUE_STREAM):
    super().__init__(l2_norm_clip, stddev)
    self._seed, self._stream = int(seed), int(stream)

  def make_global_state(self, l2_norm_clip, stddev, releases=0):
    return self._GlobalState(tf.cast(l2_norm_clip, tf.float32), tf.cast(stddev, tf.float32),
                             tf.cast(releases, tf.int64))

  def initial_global_state(self):
    return self.make_global_state(self._l2_norm_clip, self._stddev)

  def get_noised_result(self, sample_state, global_state):
    release_key = tf.random.experimental.stateless_fold_in(_key(self._seed, self._stream), global_state.releases)
    leaves = tf.nest.flatten(sample_state)
    noised = [v + tf.cast(tf.random.stateless_normal(tf.shape(v), tf.random.experimental.stateless_fold_in(
        release_key, i), stddev=global_state.stddev), v.dtype) for i, v in enumerate(leaves)]
    new_state = global_state._replace(releases=global_state.releases + 1)
    event = dp_accounting.GaussianDpEvent(global_state.stddev / global_state.l2_norm_clip)
    return tf.nest.pack_sequence_as(sample_state, noised), new_state, event


class SeededQuantileEstimatorQuery(tfp.QuantileEstimatorQuery):
  """Private quantile estimation (Andrew et al.) whose below-estimate count noise is seeded."""

  def __init__(self, *args, seed: int, **kwargs):
    self._seed = int(seed)  # Read by _construct_below_estimate_query, which the base __init__ calls.
    super().__init__(*args, **kwargs)

  def _construct_below_estimate_query(self, below_estimate_stddev, expected_num_records):
    # As the base class: records are shifted to +-0.5, so the sensitivity is 0.5 and no clipping happens.
    return tfp.NormalizedQuery(SeededGaussianSumQuery(0.5, below_estimate_stddev, self._seed, COUNT_STREAM),
                               denominator=expected_num_records)


class SeededQuantileAdaptiveClipSumQuery(tfp.QuantileAdaptiveClipSumQuery):
  """`QuantileAdaptiveClipSumQuery` with seeded value and clipped-count noise. The base class rebuilds the sum
  query's state from the new clip each round; here the release counter is carried over."""

  def __init__(self, initial_l2_norm_clip, noise_multiplier, target_unclipped_quantile, learning_rate,
               clipped_count_stddev, expected_num_records, geometric_update=True, *, seed: int):
    super().__init__(initial_l2_norm_clip, noise_multiplier, target_unclipped_quantile, learning_rate,
                     clipped_count_stddev, expected_num_records, geometric_update)
    self._sum_query = SeededGaussianSumQuery(initial_l2_norm_clip, noise_multiplier * initial_l2_norm_clip, seed)
    self._quantile_estimator_query = SeededQuantileEstimatorQuery(
        initial_l2_norm_clip, target_unclipped_quantile, learning_rate, clipped_count_stddev, expected_num_records,
        geometric_update, seed=seed)

  def get_noised_result(self, sample_state, global_state):
    noised, sum_state, sum_event = self._sum_query.get_noised_result(sample_state.sum_state, global_state.sum_state)
    new_clip, quantile_state, quantile_event = self._quantile_estimator_query.get_noised_result(
        sample_state.quantile_estimator_state, global_state.quantile_estimator_state)
    new_clip = tf.maximum(new_clip, 0.0)
    sum_state = sum_state._replace(l2_norm_clip=new_clip, stddev=new_clip * global_state.noise_multiplier)
    new_state = self._GlobalState(global_state.noise_multiplier, sum_state, quantile_state)
    return noised, new_state, dp_accounting.ComposedDpEvent(events=[sum_event, quantile_event])
