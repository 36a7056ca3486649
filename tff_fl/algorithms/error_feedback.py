"""Top-k sparsified uploads with per-client error feedback (Stich et al. 2018; Karimireddy et al. 2019), as a wrapper
around ANY algorithm definition.

`TopKErrorFeedback(inner, fraction)`: client state = the inner algorithm's state (if any) plus the residual e_i,
float32[d] (d = trainable parameters; zeros for a client never seen). A round:

  client i:  Delta_i = inner.client_update(...)['update']  (FedAvg: x - y_i; SCAFFOLD, FedProx, ... alike)
             p_i = Delta_i + e_i;  s_i = topk(p_i)  (k = max(1, ceil(fraction * d)) largest |.|, the selection
             of `compression.topk`);  e_i <- p_i - s_i  (exactly what was dropped: s_i + e_i' = Delta_i + e_i)
             sends s_i; the inner upload and inner state pass through unchanged
  server:    aggregates s_i with `aggregator(fraction, inner=model_aggregator)` = `compression.topk(...)`: top-k of
             an already k-sparse vector is itself, so the values are unchanged and the stage reports the wire cost
             (aggregator/bits_per_client = k * (32 + ceil(log2 d))) exactly as for stateless top-k; the server
             side (extra, to_server_delta, server_update) is the inner algorithm's.

Stateless top-k is the inner algorithm with `model_aggregator=compression.topk(fraction)`: the same wire cost, but
what top-k drops is lost. A client whose update has weight 0 (non-finite, or no data under NUM_EXAMPLES weighting)
sends nothing and keeps its residual.
"""

import collections
import dataclasses
import math

import numpy as np
import tensorflow as tf

from tff_fl.aggregators import compression
from tff_fl.aggregators import flat
from tff_fl.algorithms import definition


def num_kept(fraction: float, dim: int) -> int:
  """k for `fraction` of `dim` coordinates (same rule as `compression.topk`)."""
  return max(1, math.ceil(fraction * dim))


def sparsify_with_feedback(update_vector: tf.Tensor, residual: tf.Tensor, k: int):
  """(sent, new_residual) for float32[d] vectors: sent = topk(update + residual), new_residual = the rest."""
  corrected = update_vector + residual
  sent = compression._top_k_sparsify(corrected, k, skip_sparse=False)  # pylint: disable=protected-access
  return sent, corrected - sent


def aggregator(fraction: float, inner=None):
  """The server side of `TopKErrorFeedback(..., fraction)`: `compression.topk(fraction, inner)` (bits accounting)."""
  return compression.topk(float(fraction), inner=inner)


def _unflatten_like(vector: tf.Tensor, structure):
  leaves = tf.nest.flatten(structure)
  sizes = [int(np.prod(t.shape)) for t in leaves]
  parts = tf.split(vector, sizes)
  return tf.nest.pack_sequence_as(structure, [tf.cast(tf.reshape(p, t.shape), t.dtype) for p, t in zip(parts, leaves)])


@dataclasses.dataclass(frozen=True)
class TopKErrorFeedback(definition.Algorithm):
  """`inner`'s algorithm with top-k + error-feedback uploads; `fraction` in (0, 1] of the coordinates is sent."""
  inner: definition.Algorithm
  fraction: float

  @property
  def name(self):
    return f'{self.inner.name}+topk_ef'

  def validate(self, num_clients=None):
    if not isinstance(self.inner, definition.Algorithm):
      raise TypeError(f'inner must be a tff_fl.algorithms.definition.Algorithm; got {type(self.inner).__name__}.')
    if (isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float))
        or not 0.0 < self.fraction <= 1.0):
      raise ValueError(f'fraction must be in (0, 1]; got {self.fraction!r}.')
    self.inner.validate(num_clients)

  # Server side: the inner algorithm's.
  def server_extra(self, model):
    return self.inner.server_extra(model)

  def default_server_learning_rate(self):
    return self.inner.default_server_learning_rate()

  def to_server_delta(self, aggregate):
    return self.inner.to_server_delta(aggregate)

  def server_update(self, trainable, extra, upload_sum):
    return self.inner.server_update(trainable, extra, upload_sum)

  # Client side.
  def client_state(self, model):
    dim = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    state = collections.OrderedDict()
    inner = self.inner.client_state(model)
    if inner is not None:
      state['inner'] = inner
    state['residual'] = tf.zeros([dim], tf.float32)
    return state

  def _inner_state(self, state):
    return state['inner'] if 'inner' in state else None

  def personal_weights(self, weights, state):
    return self.inner.personal_weights(weights, self._inner_state(state))

  def client_update(self, ctx):
    out = collections.OrderedDict(self.inner.client_update(dataclasses.replace(ctx,
                                                                               state=self._inner_state(ctx.state))))
    residual = ctx.state['residual']
    vector = flat.flatten_value(out['update'])
    if vector.shape[0] != residual.shape[0]:
      raise ValueError(f'TopKErrorFeedback needs an update of the trainable weights\' size {residual.shape[0]}; '
                       f'{self.inner.name} sends {vector.shape[0]} values.')
    sent, new_residual = sparsify_with_feedback(vector, residual, num_kept(float(self.fraction), residual.shape[0]))
    send = out['update_weight'] > 0
    sent = tf.where(send, sent, tf.zeros_like(sent))
    state = collections.OrderedDict()
    if out['state'] is not None:
      state['inner'] = out['state']
    state['residual'] = tf.where(send, new_residual, residual)
    out['update'], out['state'] = _unflatten_like(sent, out['update']), state
    return out
