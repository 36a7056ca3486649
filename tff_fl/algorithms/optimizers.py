"""Client and server optimizers by name, as `tff.learning.optimizers.Optimizer` (the FedOpt family).

`sgd` is plain SGD; `momentum` is SGD with heavy-ball momentum (FedAvgM on the server); `adam`, `yogi` and `adagrad`
are the adaptive server optimizers of Reddi et al. (2021), whose `epsilon` is the paper's tau.
`weight_decay` > 0 wraps any of them in `WeightDecay`: L2 weight decay as PyTorch's `torch.optim.SGD(weight_decay=)`
does it (g <- g + wd * w before the optimizer's step, momentum included), which NIID-Bench's clients use.
"""

import tensorflow as tf
import tensorflow_federated as tff


class WeightDecay(tff.learning.optimizers.Optimizer):
  """`inner` on the gradient g + weight_decay * w (coupled L2 decay, PyTorch SGD's `weight_decay`).

  State and hyperparameters are the inner optimizer's. With momentum rho the step is, per PyTorch:
  d = g + wd * w;  m <- rho * m + d;  w <- w - lr * m   (TFF's SGDM starts m at 0, so m_1 = d_1 as in PyTorch).
  """

  def __init__(self, inner: tff.learning.optimizers.Optimizer, weight_decay: float):
    if not weight_decay >= 0:
      raise ValueError(f'weight_decay must be >= 0; got {weight_decay}.')
    self.inner, self.weight_decay = inner, float(weight_decay)

  def initialize(self, specs):
    return self.inner.initialize(specs)

  def next(self, state, weights, gradients):
    decayed = tf.nest.map_structure(lambda g, w: g + self.weight_decay * w, gradients, weights)
    return self.inner.next(state, weights, decayed)

  def get_hparams(self, state):
    return self.inner.get_hparams(state)

  def set_hparams(self, state, hparams):
    return self.inner.set_hparams(state, hparams)


def with_weight_decay(optimizer: tff.learning.optimizers.Optimizer,
                      weight_decay: float) -> tff.learning.optimizers.Optimizer:
  """`optimizer` itself for weight_decay == 0, else `WeightDecay(optimizer, weight_decay)`."""
  return optimizer if weight_decay == 0 else WeightDecay(optimizer, weight_decay)


OPTIMIZERS = ('sgd', 'momentum', 'adam', 'yogi', 'adagrad')


def build_optimizer(name: str, learning_rate: float, *, momentum: float = 0.9, beta_1: float = 0.9,
                    beta_2: float = 0.99, epsilon: float = 1e-3, initial_accumulator_value: float = 0.1,
                    weight_decay: float = 0.0, name_prefix: str = '') -> tff.learning.optimizers.Optimizer:
  """Returns the named optimizer (with L2 `weight_decay`); errors name the arguments, prefixed `{name_prefix}_` when
  given (`client` -> `client_learning_rate`: the binary's flags of the same names)."""
  arg = lambda n: f'{name_prefix}_{n}' if name_prefix else n
  if not (weight_decay >= 0 and weight_decay < float('inf')):
    raise ValueError(f"{arg('weight_decay')} must be a finite number >= 0; got {weight_decay}.")
  return with_weight_decay(_build(name, learning_rate, momentum, beta_1, beta_2, epsilon, initial_accumulator_value,
                                  arg), weight_decay)


def _build(name, learning_rate, momentum, beta_1, beta_2, epsilon, initial_accumulator_value, arg):
  opt_flag, lr_flag = arg('optimizer'), arg('learning_rate')
  if name not in OPTIMIZERS:
    raise ValueError(f"{opt_flag} must be one of {', '.join(OPTIMIZERS)}; got '{name}'.")
  if not learning_rate > 0:
    raise ValueError(f'{lr_flag} must be > 0; got {learning_rate}.')
  if name == 'sgd':
    return tff.learning.optimizers.build_sgdm(learning_rate=learning_rate)
  if name == 'momentum':
    if not 0 <= momentum < 1:
      raise ValueError(f"{arg('momentum')} must be in [0, 1); got {momentum}.")
    return tff.learning.optimizers.build_sgdm(learning_rate=learning_rate, momentum=momentum)
  if not epsilon > 0:
    raise ValueError(f"{arg('epsilon')} must be > 0; got {epsilon}.")
  if name == 'adagrad':
    return tff.learning.optimizers.build_adagrad(
        learning_rate=learning_rate, initial_preconditioner_value=initial_accumulator_value,
        epsilon=epsilon)
  if not (0 <= beta_1 < 1 and 0 <= beta_2 < 1):
    raise ValueError(f"{arg('beta_1')} and {arg('beta_2')} must be in [0, 1); got {beta_1}, {beta_2}.")
  builder = tff.learning.optimizers.build_adam if name == 'adam' else tff.learning.optimizers.build_yogi
  return builder(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)


def sgd_hparams(optimizer: tff.learning.optimizers.Optimizer):
  """(learning_rate, momentum) of an SGD / heavy-ball optimizer (`sgd`: momentum 0.0); None for any other optimizer.

  Read through the public `initialize` / `get_hparams` of `tff.learning.optimizers` (no weights needed)."""
  try:
    hparams = optimizer.get_hparams(optimizer.initialize(()))
  except (AttributeError, TypeError, ValueError):
    return None
  if 'learning_rate' not in hparams or not set(hparams) <= {'learning_rate', 'momentum'}:
    return None
  return float(hparams['learning_rate']), float(hparams.get('momentum', 0.0))
