"""Top-k sparsified FedAvg with per-client error feedback (Stich et al. 2018; Karimireddy et al. 2019), a
`StatefulProcess`.

Client state: residual e_i, float32[d] (d = trainable parameters; zeros for a client never seen). A round:

  client i:  Delta_i = x - y_i (local training as FedAvg);  p_i = Delta_i + e_i
             s_i = topk(p_i) (k = max(1, ceil(fraction * d)) largest |.|, `compression.topk`'s selection)
             e_i <- p_i - s_i        (exactly what was dropped; s_i + e_i' = Delta_i + e_i)
  server:    aggregates s_i with `compression.topk(fraction, inner=model_aggregator)`: top-k of an already k-sparse
             vector is itself, so the values are unchanged and the stage reports the wire cost
             (aggregator/bits_per_client = k * (32 + ceil(log2 d))) exactly as for stateless top-k.

Stateless top-k is `fed_avg.build_fed_avg(..., model_aggregator=compression.topk(fraction))`: the same wire cost,
but what top-k drops is lost. A non-finite local update is zeroed (weight 0) and the residual kept.
"""

import collections
import math
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.aggregators import compression
from tff_fl.aggregators import flat
from tff_fl.algorithms import client_work as client_work_lib
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import stateful_process

ClientWeighting = tff.learning.ClientWeighting


def num_kept(fraction: float, dim: int) -> int:
  """k for `fraction` of `dim` coordinates (same rule as `compression.topk`)."""
  return max(1, math.ceil(fraction * dim))


def sparsify_with_feedback(update_vector: tf.Tensor, residual: tf.Tensor, k: int):
  """(sent, new_residual) for float32[d] vectors: sent = topk(update + residual), new_residual = the rest."""
  corrected = update_vector + residual
  sent = compression._top_k_sparsify(corrected, k)  # pylint: disable=protected-access
  return sent, corrected - sent


def build_topk_error_feedback(model_fn: client_work_lib.ModelFn,
                              client_optimizer: tff.learning.optimizers.Optimizer, fraction: float,
                              server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *,
                              client_weighting: ClientWeighting = ClientWeighting.NUM_EXAMPLES,
                              model_aggregator: Optional[fed_avg.AnyFactory] = None,
                              metrics_aggregator=None) -> stateful_process.StatefulProcess:
  """FedAvg whose uploads are top-k sparsified with error feedback (see module docstring).

  Args:
    model_fn: no-arg callable returning a fresh `tff.learning.models.VariableModel`.
    client_optimizer: `tff.learning.optimizers.Optimizer` for local steps.
    fraction: share of coordinates sent per client and round, in (0, 1].
    server_optimizer: applied to the aggregated update; default SGD(1.0).
    client_weighting: NUM_EXAMPLES or UNIFORM.
    model_aggregator: factory the sparse updates go to after the top-k stage; default MeanFactory.
    metrics_aggregator: default `tff.learning.metrics.sum_then_finalize`.
  """
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
    raise ValueError(f'topk_ef fraction (--compression=topk_ef(fraction)) must be in (0, 1]; got {fraction!r}.')
  if not isinstance(client_optimizer, tff.learning.optimizers.Optimizer):
    raise TypeError(f'client_optimizer must be a tff.learning.optimizers.Optimizer; got {type(client_optimizer)}.')
  weights_type, _, _ = client_work_lib.model_types(model_fn)
  trainable_type = weights_type.trainable
  dim = flat.flat_size(trainable_type)
  k = num_kept(float(fraction), dim)

  def client_state_fn():
    return collections.OrderedDict(residual=tf.zeros([dim], tf.float32))

  def client_fn(weights, extra, client_state, dataset):
    del extra
    local_train = stateful_process.build_local_sgd_fn(model_fn(), weighting=client_weighting)
    out, unfinalized = local_train(client_optimizer, weights, dataset)
    sent, residual = sparsify_with_feedback(flat.flatten_value(out['update']), client_state['residual'], k)
    finite = out['finite'] > 0  # A non-finite update (zeroed, weight 0) sends nothing and keeps the residual.
    sent = tf.where(finite, sent, tf.zeros_like(sent))
    residual = tf.where(finite, residual, client_state['residual'])
    out['update'] = flat.unflatten_value(sent, trainable_type)
    out['client_state'] = collections.OrderedDict(residual=residual)
    out['upload'] = tf.constant(0.0, tf.float32)
    return out, unfinalized

  aggregator = compression.topk(float(fraction), inner=model_aggregator)
  return stateful_process.build_stateful_process(
      model_fn, client_fn=client_fn, client_state_fn=client_state_fn, server_optimizer=server_optimizer,
      model_aggregator=aggregator, metrics_aggregator=metrics_aggregator)
