"""Algorithm registry: name -> builder of an `Algorithm` definition from an experiment.

Built in (all registered when `tff_fl` is imported): `fedavg` (McMahan et al. 2017; with a non-SGD server optimizer
it is FedOpt, Reddi et al. 2021), `fedprox` (Li et al. 2020, needs mu > 0), `fedsgd`, `fednova`, `scaffold`,
`feddyn`, `fedper`, `ditto`. A builder takes the experiment (anything with `task`, `algo_cfg` (an
`AlgorithmConfig`) and `client_optimizer`, e.g. `experiments.experiment.Experiment`) and returns an `Algorithm`.
A user module adds one with `ALGORITHMS.register(name, builder)` (a name taken is a ValueError).
An experiment's `algorithm_wrappers` (each `fn(experiment, algorithm) -> Algorithm`, e.g. top-k with error
feedback around any algorithm) apply, in order, to whatever algorithm the registry builds for that experiment;
nothing here is global beyond the registry of names.
"""

import dataclasses
from typing import Callable

import tensorflow_federated as tff

from tff_fl import registry
from tff_fl.algorithms import definition
from tff_fl.algorithms import ditto
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import fed_sgd
from tff_fl.algorithms import feddyn
from tff_fl.algorithms import fednova
from tff_fl.algorithms import fedper
from tff_fl.algorithms import optimizers
from tff_fl.algorithms import scaffold

WEIGHTINGS = {'num_examples': tff.learning.ClientWeighting.NUM_EXAMPLES,
              'uniform': tff.learning.ClientWeighting.UNIFORM}
ALGORITHMS = registry.Registry('algorithm')  # name -> builder(experiment) -> definition.Algorithm


def register(name: str, builder: Callable) -> Callable:
  """Registers `builder(experiment) -> Algorithm` as `name`; a name registered twice is a ValueError."""
  return ALGORITHMS.register(name, builder)


def algorithms() -> tuple:
  return ALGORITHMS.names()


@dataclasses.dataclass
class AlgorithmConfig:
  """The registry's algorithm and the hyperparameters its built-in builders read (flags of the same names)."""
  algorithm: str = 'fedavg'
  mu: float = 0.0
  client_weighting: str = 'num_examples'
  feddyn_alpha: float = 0.01
  ditto_lambda: float = 0.1
  fedper_head_layers: int = 1
  scaffold_correction: str = 'gradient'

  def validate(self) -> None:
    ALGORITHMS.get(self.algorithm)  # Unknown: ValueError listing the registered algorithms.
    if self.client_weighting not in WEIGHTINGS:
      raise ValueError(f"client_weighting must be one of {', '.join(WEIGHTINGS)}; got '{self.client_weighting}'.")
    if self.mu < 0:
      raise ValueError(f'mu must be >= 0; got {self.mu}.')
    if self.algorithm == 'fedprox' and self.mu == 0:
      raise ValueError('algorithm=fedprox needs mu > 0 (mu = 0 is plain fedavg).')
    if self.algorithm not in ('fedprox',) and self.mu != 0:
      raise ValueError(f'mu applies only to algorithm=fedprox; got algorithm={self.algorithm} mu={self.mu}.')
    if self.algorithm == 'feddyn' and not self.feddyn_alpha > 0:
      raise ValueError(f'feddyn_alpha must be > 0; got {self.feddyn_alpha}.')
    if self.algorithm == 'ditto' and not self.ditto_lambda >= 0:
      raise ValueError(f'ditto_lambda must be >= 0; got {self.ditto_lambda}.')
    if self.scaffold_correction not in scaffold.CORRECTIONS:
      raise ValueError(f"scaffold_correction must be one of {', '.join(scaffold.CORRECTIONS)}; got "
                       f"'{self.scaffold_correction}'.")
    if self.fedper_head_layers < 1:
      raise ValueError(f'fedper_head_layers must be >= 1; got {self.fedper_head_layers}.')


def weighting(cfg: AlgorithmConfig) -> tff.learning.ClientWeighting:
  return WEIGHTINGS[cfg.client_weighting]


def build_algorithm(exp) -> definition.Algorithm:
  """The registered builder's algorithm, then the experiment's `algorithm_wrappers` (if any) applied to it."""
  exp.algo_cfg.validate()
  algorithm = ALGORITHMS.get(exp.algo_cfg.algorithm)(exp)
  for wrapper in getattr(exp, 'algorithm_wrappers', ()):
    algorithm = wrapper(exp, algorithm)
  return algorithm


def _client_sgd(exp, allowed: str) -> tuple[float, float]:
  """(learning_rate, momentum) of the experiment's client optimizer; ValueError unless it is `allowed` SGD."""
  hparams = optimizers.sgd_hparams(exp.client_optimizer)
  if hparams is None or (allowed == 'sgd' and hparams[1]):
    raise ValueError(f'algorithm={exp.algo_cfg.algorithm} needs client_optimizer={allowed} (its client step is '
                     'the SGD step).')
  return hparams


def _weight_decay(optimizer) -> float:
  """The L2 weight decay an `optimizers.WeightDecay` client optimizer adds to the gradient (else 0)."""
  return optimizer.weight_decay if isinstance(optimizer, optimizers.WeightDecay) else 0.0


def _scaffold(exp) -> definition.Algorithm:
  correction = exp.algo_cfg.scaffold_correction
  hparams = optimizers.sgd_hparams(exp.client_optimizer)
  if correction == 'gradient' and (hparams is None or hparams[1] or _weight_decay(exp.client_optimizer)):
    raise ValueError('algorithm=scaffold with scaffold_correction=gradient runs plain SGD: it needs '
                     'client_optimizer=sgd and client_weight_decay=0; scaffold_correction=after_step runs sgd or '
                     'momentum.')
  return scaffold.Scaffold(_client_sgd(exp, 'sgd or momentum')[0], len(exp.task.client_ids), correction)


def _fednova(exp) -> definition.Algorithm:
  return fednova.FedNova(*_client_sgd(exp, 'sgd or momentum'), _weight_decay(exp.client_optimizer))


register('fedavg', lambda exp: fed_avg.FedAvg())
register('fedprox', lambda exp: fed_avg.FedAvg(proximal_mu=exp.algo_cfg.mu))
register('fedsgd', lambda exp: fed_sgd.FedSGD())
register('fednova', _fednova)
register('scaffold', _scaffold)
register('feddyn', lambda exp: feddyn.FedDyn(exp.algo_cfg.feddyn_alpha, len(exp.task.client_ids)))
register('fedper', lambda exp: fedper.FedPer(
    fedper.head_size_from_layers(exp.task.keras_model(), exp.algo_cfg.fedper_head_layers)))
register('ditto', lambda exp: ditto.Ditto(exp.algo_cfg.ditto_lambda))
