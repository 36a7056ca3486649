"""Byzantine-robust aggregators: coordinate-wise trimmed mean and median, Krum and Multi-Krum.

Mechanism. These statistics need every client's value at the server, which TFF's sums cannot give. Each
factory gathers them with one `tff.federated_aggregate` whose accumulator is a `float32[?, d]` tensor: a client
flattens its value (all leaves, cast to float32) into `d` numbers and `accumulate` appends that row (`merge`
concatenates). The server reduces the `[n, d]` matrix and reshapes the result back to `value_type`.

Cost (n clients, d parameters): uplink is the plain value (32 bits per parameter, no compression or SecAgg
possible, since the server sees each row); server memory O(n*d); `accumulate` re-copies the matrix, so
aggregation copies O(n^2 * d) floats in the worst case; sorting costs O(n log n * d); Krum's pairwise
distances cost O(n^2 * d). Fine for simulation cohorts (tens of clients), not for thousands.

Weights. All factories are `tff.aggregators.WeightedAggregationFactory`s (so they plug into
`tff.learning.algorithms.build_weighted_fed_avg`) but IGNORE the weights: each client gets one vote, as in the
papers; weighting by self-reported example counts would let an attacker buy influence.

Cohort size. Each needs a minimum cohort: trimmed mean floor(beta*n) >= 1 (otherwise it trims nothing;
n - 2*floor(beta*n) >= 1 then holds since beta < 0.5), Krum/Multi-Krum n > 2f+2
(and m <= n - f). Pass `cohort_size=` to validate at construction (ValueError); otherwise, and always at run
time, the server computation asserts the same condition and TFF raises an error carrying the same message.

Measurements (at SERVER): `cohort_size`; trimmed mean adds `trimmed_count` (clients dropped per coordinate);
Krum adds `selected_indices` (int32[m], positions in arrival order) and `selected_scores` (float32[m]).
"""

import abc
import collections
import math
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.aggregators import flat


class CollectingFactory(tff.aggregators.WeightedAggregationFactory, abc.ABC):
  """Base class: gathers all client values into `float32[n, d]` at SERVER and applies `reduce`."""

  def __init__(self, cohort_size: Optional[int]):
    if cohort_size is not None:
      if not isinstance(cohort_size, int) or cohort_size < 1:
        raise ValueError(f'cohort_size must be a positive int or None; got {cohort_size!r}')
      self.check_cohort_size(cohort_size)

  @abc.abstractmethod
  def requirement(self, n):
    """Returns (condition, message): `condition` holds iff a cohort of `n` clients is large enough.

    `n` is a Python int or a scalar int32 tensor; the condition is a bool or a bool tensor.
    """

  @abc.abstractmethod
  def reduce(self, stacked: tf.Tensor):
    """Maps `float32[n, d]` to (`float32[d]`, OrderedDict of extra measurements). Runs at SERVER, in TF."""

  def check_cohort_size(self, n: int) -> None:
    ok, message = self.requirement(n)
    if not ok:
      raise ValueError(f'{message}; got cohort_size={n}')

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    d = flat.flat_size(value_type)
    acc_type = tff.TensorType(np.float32, [None, d])

    @tff.tensorflow.computation
    def zero():
      return tf.zeros([0, d], tf.float32)

    @tff.tensorflow.computation(acc_type, value_type)
    def accumulate(acc, value):
      return tf.concat([acc, flat.flatten_value(value)[tf.newaxis]], axis=0)

    @tff.tensorflow.computation(acc_type, acc_type)
    def merge(a, b):
      return tf.concat([a, b], axis=0)

    @tff.tensorflow.computation(acc_type)
    def report(stacked):
      n = tf.shape(stacked)[0]
      ok, message = self.requirement(n)
      check = tf.debugging.Assert(ok, [message + '; got cohort_size=', n])
      with tf.control_dependencies([check]):
        stacked = tf.identity(stacked)
      result, extra = self.reduce(stacked)
      measurements = collections.OrderedDict(cohort_size=n, **extra)
      return flat.unflatten_value(result, value_type), measurements

    @tff.federated_computation
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS),
                               tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      del weight  # One client, one vote (see module docstring).
      result, measurements = tff.federated_aggregate(value, zero(), accumulate, merge, report)
      return tff.templates.MeasuredProcessOutput(state=state, result=result, measurements=measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)


def _sorted_clients(stacked):
  return tf.sort(stacked, axis=0)


class TrimmedMeanFactory(CollectingFactory):
  """Coordinate-wise trimmed mean: per coordinate drop the floor(beta*n) smallest and largest, average the rest.

  Matches `scipy.stats.trim_mean(values, beta, axis=0)`.
  """

  def __init__(self, beta: float, cohort_size: Optional[int] = None):
    if not isinstance(beta, (int, float)) or not 0.0 <= beta < 0.5:
      raise ValueError(f'trimmed_mean beta must be a float in [0, 0.5); got {beta!r}')
    self._beta = float(beta)
    super().__init__(cohort_size)

  def _num_trimmed(self, n):
    if isinstance(n, int):
      return int(math.floor(self._beta * n))
    return tf.cast(tf.floor(self._beta * tf.cast(n, tf.float64)), tf.int32)

  def requirement(self, n):
    # n - 2*floor(beta*n) >= 1 always holds for beta < 0.5; the binding condition is that anything is trimmed.
    min_n = math.ceil(1.0 / self._beta - 1e-9) if self._beta > 0 else 1
    trims = self._num_trimmed(n) >= 1 if self._beta > 0 else n >= 1
    return trims, (f'trimmed_mean(beta={self._beta}) needs floor(beta*n) >= 1, i.e. n >= {min_n} clients, '
                   'or it trims nothing')

  def reduce(self, stacked):
    n = tf.shape(stacked)[0]
    k = self._num_trimmed(n)
    kept = _sorted_clients(stacked)[k:n - k]
    return tf.reduce_mean(kept, axis=0), collections.OrderedDict(trimmed_count=2 * k)


class MedianFactory(CollectingFactory):
  """Coordinate-wise median (mean of the two middle values for even n), as `numpy.median(values, axis=0)`."""

  def __init__(self, cohort_size: Optional[int] = None):
    super().__init__(cohort_size)

  def requirement(self, n):
    return n >= 1, 'median needs at least 1 client'

  def reduce(self, stacked):
    n = tf.shape(stacked)[0]
    s = _sorted_clients(stacked)
    return 0.5 * (s[(n - 1) // 2] + s[n // 2]), collections.OrderedDict()


class KrumFactory(CollectingFactory):
  """Multi-Krum (Blanchard et al., NeurIPS 2017); `num_selected=1` is Krum.

  Client i's score is the sum of squared L2 distances to its n - f - 2 nearest other clients. The result is
  the average of the `num_selected` clients with the lowest scores (ties: lower arrival index first).
  """

  def __init__(self, num_byzantine: int, num_selected: int = 1, cohort_size: Optional[int] = None):
    if not isinstance(num_byzantine, int) or num_byzantine < 0:
      raise ValueError(f'krum f (num_byzantine) must be an int >= 0; got {num_byzantine!r}')
    if not isinstance(num_selected, int) or num_selected < 1:
      raise ValueError(f'multi_krum m (num_selected) must be an int >= 1; got {num_selected!r}')
    self._f = num_byzantine
    self._m = num_selected
    super().__init__(cohort_size)

  def requirement(self, n):
    f, m = self._f, self._m
    ok = (n > 2 * f + 2) and (m <= n - f) if isinstance(n, int) else tf.logical_and(n > 2 * f + 2, m <= n - f)
    return ok, f'krum(f={f}, m={m}) needs n > 2f+2 = {2 * f + 2} and m <= n - f clients'

  def reduce(self, stacked):
    n = tf.shape(stacked)[0]
    # Row i: squared distances from client i to every client (exact and symmetric: (a-b)^2 == (b-a)^2).
    dist = tf.map_fn(lambda row: tf.reduce_sum(tf.square(stacked - row), axis=1), stacked)
    # Drop column 0 of each sorted row (the zero self-distance), keep the n - f - 2 nearest others.
    nearest = tf.sort(dist, axis=1)[:, 1:n - self._f - 1]
    scores = tf.reduce_sum(nearest, axis=1)
    neg_scores, indices = tf.math.top_k(-scores, k=self._m, sorted=True)
    result = tf.reduce_mean(tf.gather(stacked, indices), axis=0)
    return result, collections.OrderedDict(selected_indices=indices, selected_scores=-neg_scores)


def trimmed_mean(beta: float, cohort_size: Optional[int] = None) -> TrimmedMeanFactory:
  """Coordinate-wise trimmed mean dropping floor(beta*n) values at each end (weights ignored)."""
  return TrimmedMeanFactory(beta, cohort_size)


def median(cohort_size: Optional[int] = None) -> MedianFactory:
  """Coordinate-wise median (weights ignored)."""
  return MedianFactory(cohort_size)


def krum(f: int, cohort_size: Optional[int] = None) -> KrumFactory:
  """Krum tolerating f Byzantine clients: returns the single lowest-score client value (weights ignored)."""
  return KrumFactory(f, 1, cohort_size)


def multi_krum(f: int, m: int, cohort_size: Optional[int] = None) -> KrumFactory:
  """Multi-Krum: average of the m lowest-score client values (weights ignored)."""
  return KrumFactory(f, m, cohort_size)
