"""FedDC (Gao et al., CVPR 2022, "FedDC: Federated Learning with Non-IID Data via Local Drift Decoupling and
Correction"), as an algorithm definition: the whole algorithm is this module (the one-engine issue's test of the
algorithm model). It follows the authors' code (gaoliang13/FedDC: `train_FedDC`, `train_model_FedDC`).

Server extras: H = sum_i h_i over all N clients' drift variables, and G, the global gradient-difference state.
Client state: h_i (local drift) and dg_i (local gradient-difference state), zeros for a client never seen. A round
with cohort S, regularisation alpha, `num_local_steps` K (the code's n_minibatch) and client learning rate lr:

  client i:  from the broadcast theta, local SGD steps on  f_i(t) + alpha/2 ||t - (theta - h_i)||^2 + <t, G - dg_i>,
             i.e. minibatch gradient + alpha (t - (theta - h_i)) + (G - dg_i)            -> theta_i, delta = theta_i - theta
             h_i <- h_i + delta;  dg_i' = dg_i - G - delta / (K lr);  uploads delta and dg_i' - dg_i
  server:    theta <- mean_{i in S} theta_i + (1/N) H',  H' = H + sum_S delta,  G <- G + (1/N) sum_S (dg_i' - dg_i)

The mean over the cohort is the model aggregator on the FedAvg-style update theta - theta_i followed by the server
optimizer: with `client_weighting=UNIFORM` and server SGD at 1.0 (the code's `np.mean`) it is the paper's step.
Clients are weighted equally: the code's per-client weight n_i / mean_j n_j (alpha / w_i, G / w_i, dg_i' - dg_i
scaled by w_i) is 1, as for the balanced partitions of its examples; with unbalanced clients this is FedDC with
w_i = 1. The code's gradient-norm clip (10) and learning-rate decay are not part of the algorithm here (a client
optimizer may add weight decay). A client with no data or a non-finite update keeps h_i and dg_i and uploads 0.
Shapes: H, G, h_i and dg_i have the structure of the model's trainable weights.
"""

import collections
import dataclasses

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import definition


@dataclasses.dataclass(frozen=True)
class FedDC(definition.Algorithm):
  """`alpha` > 0 (the code's alpha_coef), `num_clients` N, `client_learning_rate` lr and `num_local_steps` K of
  the gradient-difference update's 1 / (K lr)."""
  alpha: float
  num_clients: int
  client_learning_rate: float
  num_local_steps: int
  name = 'feddc'

  def validate(self, num_clients=None):
    del num_clients
    if not self.alpha > 0:
      raise ValueError(f'alpha must be > 0; got {self.alpha}.')
    for name in ('num_clients', 'num_local_steps'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be an int >= 1; got {value!r}.')
    if not self.client_learning_rate > 0:
      raise ValueError(f'client_learning_rate must be > 0; got {self.client_learning_rate}.')

  def server_extra(self, model):
    return collections.OrderedDict(drift_sum=definition.zeros_like_trainable(model),
                                   gradient_diff=definition.zeros_like_trainable(model))

  def client_state(self, model):
    return collections.OrderedDict(drift=definition.zeros_like_trainable(model),
                                   gradient_diff=definition.zeros_like_trainable(model))

  def client_update(self, ctx):
    h, dg = ctx.state['drift'], ctx.state['gradient_diff']
    global_dg = ctx.extra['gradient_diff']
    anchor = tff.learning.models.ModelWeights(trainable=tf.nest.map_structure(tf.subtract, ctx.weights.trainable, h),
                                              non_trainable=ctx.weights.non_trainable)
    out = ctx.train(proximal_mu=float(self.alpha), anchor=anchor,
                    correction=tf.nest.map_structure(tf.subtract, global_dg, dg))
    ok = tf.cast(tf.logical_and(out['finite'] > 0, out['num_steps'] > 0), tf.float32)
    beta = 1.0 / (self.num_local_steps * self.client_learning_rate)
    # update = theta - theta_i = -delta (exactly 0 without a finite step).
    drift = tf.nest.map_structure(tf.negative, out['update'])
    dg_change = tf.nest.map_structure(lambda g, d: beta * d - ok * g, global_dg, out['update'])
    state = collections.OrderedDict(drift=tf.nest.map_structure(tf.add, h, drift),
                                    gradient_diff=tf.nest.map_structure(tf.add, dg, dg_change))
    return definition.client_output(out, upload=collections.OrderedDict(drift=drift, gradient_diff=dg_change),
                                    state=state)

  def server_update(self, trainable, extra, upload_sum):
    n = float(self.num_clients)
    drift_sum = tf.nest.map_structure(tf.add, extra['drift_sum'], upload_sum['drift'])
    gradient_diff = tf.nest.map_structure(lambda g, s: g + s / n, extra['gradient_diff'], upload_sum['gradient_diff'])
    trainable = tf.nest.map_structure(lambda w, h: w + h / n, trainable, drift_sum)
    return trainable, collections.OrderedDict(drift_sum=drift_sum, gradient_diff=gradient_diff)
