"""SCAFFOLD (Karimireddy et al. 2020, Algorithm 1) with option II control variates, as an algorithm definition.

Server extra x's companion c (server control variate); client state c_i (zeros for a client never seen). A round
with cohort S out of N clients:

  client i:  y <- x;  K local SGD steps  y <- y - lr_l * (g_i(y) - c_i + c)     (K = minibatches it ran)
             c_i+ <- c_i - c + (x - y) / (K * lr_l)                              (option II)
             sends dy_i = y - x (as the FedAvg-style update x - y) and uploads dc_i = c_i+ - c_i; stores c_i+
  server:    x <- x + lr_g * mean_i dy_i      (server SGD at lr_g; any server optimizer / aggregator may be used)
             c <- c + (1/N) * sum_i dc_i      (partial participation: 1/N, not 1/|S|)

The paper averages dy_i uniformly (run it with `client_weighting=UNIFORM`). A client with no data or a non-finite
update keeps c_i and uploads dc_i = 0 and update 0 with weight 0. With c = c_i = 0 the client step is plain SGD, so
a round with all control variates zero is exactly a FedAvg round. Local steps are SGD at `client_learning_rate`
(option II divides by it), whatever client optimizer the engine is given.
Shapes: c and c_i have the structure of the model's trainable weights.

`correction='after_step'` is SCAFFOLD as NIID-Bench implements it (Li et al., ICDE 2022; `train_net_scaffold` and
the `scaffold` branch of `experiments.py`): the client runs the engine's client optimizer (NIID-Bench: SGD with
momentum rho and weight decay) on the plain gradient, and after every step moves the weights by
-lr_l * (c - c_i) outside the optimizer (so the correction enters neither the momentum buffer nor the weight decay):

  y <- opt_step(y, g_i(y));  y <- y - lr_l * (c - c_i)          (lr_l = `client_learning_rate`, NIID-Bench's args.lr)

The control-variate update (option II with K = all steps of the E epochs), c's 1/N update and the server's
data-size-weighted average (NIID-Bench's `fed_avg_freqs`: client_weighting=NUM_EXAMPLES, server SGD at lr 1) are
as above. With plain SGD and no weight decay both modes take the same steps.
"""

import collections
import dataclasses

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import definition

CORRECTIONS = ('gradient', 'after_step')


class _ShiftAfterStep(tff.learning.optimizers.Optimizer):
  """`inner`'s step, then w <- w - shift (NIID-Bench's per-step SCAFFOLD correction); `shift` is flat like weights."""

  def __init__(self, inner, shift):
    self.inner, self.shift = inner, shift

  def initialize(self, specs):
    return self.inner.initialize(specs)

  def next(self, state, weights, gradients):
    state, weights = self.inner.next(state, weights, gradients)
    return state, tuple(w - s for w, s in zip(weights, self.shift))


@dataclasses.dataclass(frozen=True)
class Scaffold(definition.Algorithm):
  """`correction`: 'gradient' (the paper: plain SGD on g - c_i + c) or 'after_step' (NIID-Bench; see the module)."""
  client_learning_rate: float
  num_clients: int
  correction: str = 'gradient'
  name = 'scaffold'

  def validate(self, num_clients=None):
    del num_clients
    if not self.client_learning_rate > 0:
      raise ValueError(f'client_learning_rate must be > 0; got {self.client_learning_rate}.')
    if isinstance(self.num_clients, bool) or not isinstance(self.num_clients, int) or self.num_clients < 1:
      raise ValueError(f'num_clients must be an int >= 1; got {self.num_clients!r}.')
    if self.correction not in CORRECTIONS:
      raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}; got {self.correction!r}.")

  def server_extra(self, model):
    return definition.zeros_like_trainable(model)

  def client_state(self, model):
    return collections.OrderedDict(control=definition.zeros_like_trainable(model))

  def client_update(self, ctx):
    lr = float(self.client_learning_rate)
    c, c_i = ctx.extra, ctx.state['control']
    c_minus_ci = tf.nest.map_structure(tf.subtract, c, c_i)
    if self.correction == 'gradient':
      out = ctx.train(optimizer=tff.learning.optimizers.build_sgdm(learning_rate=lr),
                      correction=c_minus_ci)  # gradient + c - c_i
    else:
      shift = tuple(lr * d for d in tf.nest.flatten(c_minus_ci))
      out = ctx.train(optimizer=_ShiftAfterStep(ctx.optimizer, shift))
    ok = tf.cast(tf.logical_and(out['finite'] > 0, out['num_steps'] > 0), tf.float32)
    scale = ok / (tf.maximum(out['num_steps'], 1.0) * lr)
    # dc_i = c_i+ - c_i = -c + (x - y) / (K lr_l), or 0 for a client without a finite step (its update is 0).
    upload = tf.nest.map_structure(lambda ck, d: d * scale - ck * ok, c, out['update'])
    return definition.client_output(out, upload=upload,
                                    state=collections.OrderedDict(control=tf.nest.map_structure(tf.add, c_i, upload)))

  def server_update(self, trainable, extra, upload_sum):
    return trainable, tf.nest.map_structure(lambda ck, s: ck + s / float(self.num_clients), extra, upload_sum)
