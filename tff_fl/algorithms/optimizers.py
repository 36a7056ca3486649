"""Client and server optimizers by name, as `tff.learning.optimizers.Optimizer` (the FedOpt family).

`sgd` is plain SGD; `momentum` is SGD with heavy-ball momentum (FedAvgM on the server); `adam`, `yogi` and `adagrad`
are the adaptive server optimizers of Reddi et al. (2021), whose `epsilon` is the paper's tau.
"""

import tensorflow_federated as tff

OPTIMIZERS = ('sgd', 'momentum', 'adam', 'yogi', 'adagrad')


def build_optimizer(name: str, learning_rate: float, *, momentum: float = 0.9, beta_1: float = 0.9,
                    beta_2: float = 0.99, epsilon: float = 1e-3, initial_accumulator_value: float = 0.1,
                    name_prefix: str = '') -> tff.learning.optimizers.Optimizer:
  """Returns the named optimizer; errors name the arguments, prefixed `{name_prefix}_` when given (`client` ->
  `client_learning_rate`: the binary's flags of the same names)."""
  arg = lambda n: f'{name_prefix}_{n}' if name_prefix else n
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
