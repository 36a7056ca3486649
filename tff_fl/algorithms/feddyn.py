"""FedDyn (Acar et al. 2021, "Federated Learning Based on Dynamic Regularization", Algorithm 1), as an algorithm
definition.

Server extra h (model-shaped, zeros at start); client state g_k, the client's last local gradient term (zeros for a
client never seen). A round with cohort P out of m clients, regularisation alpha > 0:

  client k:  theta_k <- approx. argmin_theta  L_k(theta) - <g_k, theta> + (alpha/2) ||theta - theta^{t-1}||^2
             by local steps on the minibatch gradient  grad L_k(theta) - g_k + alpha (theta - theta^{t-1})
             g_k <- g_k - alpha (theta_k - theta^{t-1});  sends and uploads theta^{t-1} - theta_k (the FedAvg-style
             update; uploads are summed over the cohort)
  server:    h <- h + (alpha / m) * sum_{k in P} (theta^{t-1} - theta_k)
             theta^t <- mean_{k in P} theta_k - h / alpha

The mean is the model aggregator applied to the updates followed by the server optimizer, SGD(1.0) by default,
which is the paper's step; the paper averages uniformly (run it with `client_weighting=UNIFORM`). With g_k = 0 and
h = 0 a client step is FedProx's with mu = alpha. A client with no data or a non-finite update keeps g_k and
uploads 0 (local training zeroes such an update, so g_k + alpha * update keeps g_k). Local steps use the engine's
client optimizer (the paper: SGD).
Shapes: h and g_k have the structure of the model's trainable weights.
"""

import collections
import dataclasses

import tensorflow as tf

from tff_fl.algorithms import definition


@dataclasses.dataclass(frozen=True)
class FedDyn(definition.Algorithm):
  alpha: float
  num_clients: int
  name = 'feddyn'

  def validate(self, num_clients=None):
    del num_clients
    if not self.alpha > 0:
      raise ValueError(f'alpha must be > 0; got {self.alpha}.')
    if isinstance(self.num_clients, bool) or not isinstance(self.num_clients, int) or self.num_clients < 1:
      raise ValueError(f'num_clients must be an int >= 1; got {self.num_clients!r}.')

  def server_extra(self, model):
    return definition.zeros_like_trainable(model)

  def client_state(self, model):
    return collections.OrderedDict(gradient=definition.zeros_like_trainable(model))

  def client_update(self, ctx):
    alpha = float(self.alpha)
    g_k = ctx.state['gradient']
    out = ctx.train(proximal_mu=alpha, correction=tf.nest.map_structure(tf.negative, g_k))
    # update = theta^{t-1} - theta_k, exactly 0 without a finite step, so g_k - alpha (theta_k - theta^{t-1}) =
    # g_k + alpha update.
    new_g = tf.nest.map_structure(lambda g, d: g + alpha * d, g_k, out['update'])
    return definition.client_output(out, upload=out['update'], state=collections.OrderedDict(gradient=new_g))

  def server_update(self, trainable, extra, upload_sum):
    alpha = float(self.alpha)
    h = tf.nest.map_structure(lambda hk, s: hk + (alpha / self.num_clients) * s, extra, upload_sum)
    return tf.nest.map_structure(lambda w, hk: w - hk / alpha, trainable, h), h
