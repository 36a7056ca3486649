"""FedNova (Wang et al. 2020): normalized averaging for clients that run different numbers of local steps.

FedAvg weights a client's update by how many local steps it ran, so with unequal steps (stragglers, random epochs)
it converges to the optimum of a different, step-weighted objective. FedNova divides each update by the client's
step budget and rescales by the cohort's effective steps:

  client i:  tau_i local steps of SGD (momentum rho optional) -> Delta_i = x - y_i;
             a_i = ||a||_1 = tau_i for SGD, [tau_i - rho(1 - rho^tau_i)/(1 - rho)] / (1 - rho) with momentum
             sends update OrderedDict(normalized=d_i = Delta_i / a_i, steps=a_i) with weight p_i (examples, or 1)
  server:    x <- x - lr_g * tau_eff * sum_i p_i d_i,  tau_eff = sum_i p_i a_i   (p normalized over the cohort)

The model aggregator (default MeanFactory, weighted by p_i) averages both parts of the update; `to_server_delta`
scales the mean d by the mean a (tau_eff) for the server optimizer. No client state: the engine runs it
(`tff_fl.engine.build_process(FedNova(lr), ...)`, where stragglers' partial work gives unequal tau_i) and
`build_fednova` exports the stock `LearningProcess`. With equal steps on every client this is exactly FedAvg.
Local steps are SGD at `client_learning_rate` (with `client_momentum`, and L2 `weight_decay` added to the gradient as
PyTorch's SGD does), whatever client optimizer the engine gets.
NIID-Bench (Li et al., ICDE 2022; `train_net_fednova` and the `fednova` branch of `experiments.py`) runs exactly this
with p_i = n_i / sum n (client_weighting=NUM_EXAMPLES), server lr 1, momentum rho and weight decay: its
a_i = (tau - rho (1 - rho^tau) / (1 - rho)) / (1 - rho) is `step_norm`, computed from the momentum alone (the weight
decay does not enter a_i), and tau counts every minibatch step of the E epochs.
Caveat: the aggregator sees the whole update, so norm-based stages (clipping, zeroing, client-level DP) measure and
scale `steps` together with `normalized` (a_i is in the tens for a few local epochs): clip/zeroing norms must allow
for it, and a clipped client's a_i shrinks with its d_i.
"""

import collections
import dataclasses
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import definition
from tff_fl.algorithms import model_types
from tff_fl.algorithms import optimizers
from tff_fl.algorithms import stock

ClientWeighting = tff.learning.ClientWeighting


def step_norm(num_steps: tf.Tensor, momentum: float) -> tf.Tensor:
  """||a||_1 of Wang et al.: the sum of the coefficients of the local gradients in the update (float32)."""
  if momentum == 0.0:
    return num_steps
  rho = tf.constant(momentum, tf.float32)
  return (num_steps - rho * (1.0 - tf.pow(rho, num_steps)) / (1.0 - rho)) / (1.0 - rho)


@dataclasses.dataclass(frozen=True)
class FedNova(definition.Algorithm):
  """Local SGD(m) at `client_learning_rate` (> 0), momentum `client_momentum` in [0, 1), L2 `weight_decay` >= 0;
  normalized update."""
  client_learning_rate: float
  client_momentum: float = 0.0
  weight_decay: float = 0.0
  name = 'fednova'

  def validate(self, num_clients=None):
    del num_clients
    if not self.client_learning_rate > 0:
      raise ValueError(f'client_learning_rate must be > 0; got {self.client_learning_rate}.')
    if not 0.0 <= self.client_momentum < 1.0:
      raise ValueError(f'client_momentum must be in [0, 1); got {self.client_momentum}.')
    if not self.weight_decay >= 0:
      raise ValueError(f'weight_decay must be >= 0; got {self.weight_decay}.')

  def client_update(self, ctx):
    momentum = float(self.client_momentum)
    optimizer = optimizers.with_weight_decay(
        tff.learning.optimizers.build_sgdm(learning_rate=float(self.client_learning_rate),
                                           momentum=momentum if momentum > 0 else None), float(self.weight_decay))
    out = ctx.train(optimizer=optimizer)
    norm = step_norm(out['num_steps'], momentum)
    safe = tf.maximum(norm, 1e-12)
    update = collections.OrderedDict(normalized=tf.nest.map_structure(lambda d: d / safe, out['update']),
                                     steps=norm)
    return definition.client_output(out, update=update)

  def to_server_delta(self, aggregate):
    return tf.nest.map_structure(lambda d: d * aggregate['steps'], aggregate['normalized'])


def build_fednova(model_fn: model_types.ModelFn, client_learning_rate: float,
                  server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *,
                  client_momentum: float = 0.0, weight_decay: float = 0.0,
                  client_weighting: ClientWeighting = ClientWeighting.NUM_EXAMPLES,
                  model_aggregator: Optional[model_types.AnyFactory] = None,
                  metrics_aggregator=None) -> tff.learning.templates.LearningProcess:
  """FedNova (module docstring) as a stock LearningProcess; server default SGD at learning rate 1."""
  algorithm = FedNova(float(client_learning_rate), float(client_momentum), float(weight_decay))
  return stock.build_learning_process(
      algorithm, model_fn, tff.learning.optimizers.build_sgdm(learning_rate=float(client_learning_rate)),
      server_optimizer, client_weighting=client_weighting, model_aggregator=model_aggregator,
      metrics_aggregator=metrics_aggregator)
