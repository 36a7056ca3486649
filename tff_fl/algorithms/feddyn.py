"""FedDyn (Acar et al. 2021, "Federated Learning Based on Dynamic Regularization", Algorithm 1), a `StatefulProcess`.

Server state theta (model), h (model-shaped, zeros at start); client state g_k, the client's last local gradient
term (zeros for a client never seen). A round with cohort P out of m clients, regularisation alpha > 0:

  client k:  theta_k <- approx. argmin_theta  L_k(theta) - <g_k, theta> + (alpha/2) ||theta - theta^{t-1}||^2
             by local SGD on the minibatch gradient  grad L_k(theta) - g_k + alpha (theta - theta^{t-1})
             g_k <- g_k - alpha (theta_k - theta^{t-1});  sends theta^{t-1} - theta_k (the FedAvg-style update)
  server:    h <- h - (alpha / m) * sum_{k in P} (theta_k - theta^{t-1})
             theta^t <- mean_{k in P} theta_k - h / alpha

The mean is the model aggregator applied to the updates followed by the server optimizer, SGD(1.0) by default,
which is the paper's step; the paper averages uniformly (`client_weighting=UNIFORM`, the default). With g_k = 0
and h = 0 a client step is FedProx's with mu = alpha. A client with no data or a non-finite update keeps g_k and
contributes 0 to h. Shapes: h and g_k have the structure of the model's trainable weights.
"""

import collections
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import client_work as client_work_lib
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import stateful_process

ClientWeighting = tff.learning.ClientWeighting


def _zeros_like_trainable(model_fn):
  return [tf.zeros(v.shape, v.dtype) for v in model_fn().trainable_variables]


def build_feddyn(model_fn: client_work_lib.ModelFn, client_optimizer: tff.learning.optimizers.Optimizer,
                 alpha: float, num_clients: int, server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                 *, client_weighting: ClientWeighting = ClientWeighting.UNIFORM,
                 model_aggregator: Optional[fed_avg.AnyFactory] = None,
                 metrics_aggregator=None) -> stateful_process.StatefulProcess:
  """FedDyn (see module docstring).

  Args:
    model_fn: no-arg callable returning a fresh `tff.learning.models.VariableModel`.
    client_optimizer: local optimizer (the paper: SGD).
    alpha: the dynamic regulariser's weight (> 0; the paper tries 0.001-0.1).
    num_clients: m, the population size, in h's update (>= 1).
    server_optimizer: applied to the aggregated update; default SGD(1.0), the paper's averaging.
    client_weighting: UNIFORM (paper) or NUM_EXAMPLES, the weight of a client's update in the mean.
    model_aggregator: any `tff.aggregators` factory for the updates; default MeanFactory.
    metrics_aggregator: default `tff.learning.metrics.sum_then_finalize`.
  """
  if not alpha > 0:
    raise ValueError(f'alpha (--feddyn_alpha) must be > 0; got {alpha}.')
  if not isinstance(num_clients, int) or num_clients < 1:
    raise ValueError(f'num_clients (--num_clients) must be an int >= 1; got {num_clients!r}.')
  alpha = float(alpha)

  def client_state_fn():
    return collections.OrderedDict(gradient=_zeros_like_trainable(model_fn))

  def client_fn(weights, h, client_state, dataset):
    del h  # Only the server uses h.
    local_train = stateful_process.build_local_sgd_fn(model_fn(), weighting=client_weighting, proximal_mu=alpha,
                                                      with_correction=True)
    g_k = client_state['gradient']
    out, unfinalized = local_train(client_optimizer, weights, dataset, tf.nest.map_structure(tf.negative, g_k))
    ok = tf.logical_and(out['finite'] > 0, out['num_steps'] > 0)
    # update = theta^{t-1} - theta_k (zero if not finite), so g_k - alpha (theta_k - theta^{t-1}) = g_k + alpha update.
    out['client_state'] = collections.OrderedDict(gradient=tf.nest.map_structure(
        lambda g, d: tf.where(ok, g + alpha * d, g), g_k, out['update']))
    out['upload'] = tf.nest.map_structure(lambda d: tf.where(ok, -d, tf.zeros_like(d)), out['update'])
    return out, unfinalized

  def server_extra_update(h, upload_sum):  # upload_sum = sum_k (theta_k - theta^{t-1})
    return tf.nest.map_structure(lambda hk, s: hk - (alpha / num_clients) * s, h, upload_sum)

  def server_model_update(trainable, h):
    return tf.nest.map_structure(lambda w, hk: w - hk / alpha, trainable, h)

  return stateful_process.build_stateful_process(
      model_fn, client_fn=client_fn, client_state_fn=client_state_fn, server_optimizer=server_optimizer,
      model_aggregator=model_aggregator, server_extra_fn=lambda: _zeros_like_trainable(model_fn),
      server_extra_update=server_extra_update, server_model_update=server_model_update,
      metrics_aggregator=metrics_aggregator)
