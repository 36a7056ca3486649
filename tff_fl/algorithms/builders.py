"""Algorithm registry for the binary: name -> builder of an `Algorithm` definition from an `Experiment`.

Built in: `fedavg` (McMahan et al. 2017; with a non-SGD server optimizer it is FedOpt, Reddi et al. 2021) and
`fedprox` (Li et al. 2020, needs mu > 0). Other modules add theirs with `register(name, builder)`; a builder takes
the experiment (task, configs, optimizers) and returns an `Algorithm`. Registering a name twice is an error.
Wrappers (`register_wrapper(fn(experiment, algorithm) -> Algorithm)`) apply to whatever algorithm the registry
builds, in registration order (e.g. top-k with error feedback around any algorithm).
"""

import collections
import dataclasses
from typing import Callable

import tensorflow_federated as tff

from tff_fl.algorithms import definition
from tff_fl.algorithms import fed_avg

WEIGHTINGS = {'num_examples': tff.learning.ClientWeighting.NUM_EXAMPLES,
              'uniform': tff.learning.ClientWeighting.UNIFORM}
_BUILDERS: dict[str, Callable] = collections.OrderedDict()
_WRAPPERS: list[Callable] = []


def register(name: str, builder: Callable) -> None:
  """Registers `builder(experiment) -> Algorithm` as `name`; a name registered twice is a ValueError."""
  if name in _BUILDERS and _BUILDERS[name] is not builder:
    raise ValueError(f'algorithm {name!r} is already registered.')
  _BUILDERS[name] = builder


def register_wrapper(wrapper: Callable) -> None:
  """Registers `wrapper(experiment, algorithm) -> Algorithm` (returns `algorithm` itself when it does not apply);
  registering the same function again is a no-op."""
  if wrapper not in _WRAPPERS:
    _WRAPPERS.append(wrapper)


def algorithms() -> tuple:
  return tuple(_BUILDERS)


@dataclasses.dataclass
class AlgorithmConfig:
  algorithm: str = 'fedavg'
  mu: float = 0.0
  client_weighting: str = 'num_examples'

  def validate(self) -> None:
    if self.algorithm not in _BUILDERS:
      raise ValueError(f"--algorithm must be one of {', '.join(_BUILDERS)}; got '{self.algorithm}'.")
    if self.client_weighting not in WEIGHTINGS:
      raise ValueError(f"--client_weighting must be one of {', '.join(WEIGHTINGS)}; got '{self.client_weighting}'.")
    if self.mu < 0:
      raise ValueError(f'--mu must be >= 0; got {self.mu}.')
    if self.algorithm == 'fedprox' and self.mu == 0:
      raise ValueError('--algorithm=fedprox needs --mu > 0 (mu = 0 is plain fedavg).')
    if self.algorithm not in ('fedprox',) and self.mu != 0:
      raise ValueError(f'--mu applies only to --algorithm=fedprox; got --algorithm={self.algorithm} --mu={self.mu}.')


def weighting(cfg: AlgorithmConfig) -> tff.learning.ClientWeighting:
  return WEIGHTINGS[cfg.client_weighting]


def build_algorithm(exp) -> definition.Algorithm:
  """The registered builder's algorithm, then every registered wrapper applied to it."""
  exp.algo_cfg.validate()
  algorithm = _BUILDERS[exp.algo_cfg.algorithm](exp)
  for wrapper in _WRAPPERS:
    algorithm = wrapper(exp, algorithm)
  return algorithm


register('fedavg', lambda exp: fed_avg.FedAvg())
register('fedprox', lambda exp: fed_avg.FedAvg(proximal_mu=exp.algo_cfg.mu))
