"""Algorithm registry for the binary: name -> builder of a learning process from an `Experiment`.

Built in: `fedavg` (McMahan et al. 2017; with a non-SGD server optimizer it is FedOpt, Reddi et al. 2021),
`fedprox` (Li et al. 2020, needs mu > 0), `fedsgd` (one full-batch gradient per client per round). Other modules
add theirs with `register(name, builder)`; a builder takes the experiment (task, configs, optimizers, aggregator).
"""

import collections
import dataclasses
from typing import Callable

import tensorflow_federated as tff

from tff_fl.algorithms import client_work as client_work_lib
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import fed_sgd

WEIGHTINGS = {'num_examples': tff.learning.ClientWeighting.NUM_EXAMPLES,
              'uniform': tff.learning.ClientWeighting.UNIFORM}
_BUILDERS: dict[str, Callable] = collections.OrderedDict()


def register(name: str, builder: Callable) -> None:
  """Registers `builder(experiment) -> tff.learning.templates.LearningProcess` (or IterativeProcess) as `name`."""
  _BUILDERS[name] = builder


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


def build_process(exp):
  exp.algo_cfg.validate()
  return _BUILDERS[exp.algo_cfg.algorithm](exp)


def wrap_client_work(exp, work: tff.learning.templates.ClientWorkProcess) -> tff.learning.templates.ClientWorkProcess:
  """Applies the experiment's client work wrappers (e.g. Byzantine attacks) in order."""
  for wrapper in getattr(exp, 'client_work_wrappers', ()):
    work = wrapper(work)
  return work


def _fed_avg(exp):
  if getattr(exp, 'client_work_builder', None) is not None:
    work = exp.client_work_builder(exp)
  else:
    work = client_work_lib.build_local_training_client_work(
        exp.task.model_fn, exp.client_optimizer, client_weighting=WEIGHTINGS[exp.algo_cfg.client_weighting],
        proximal_mu=exp.algo_cfg.mu)
  return fed_avg.compose(exp.task.model_fn, wrap_client_work(exp, work), exp.server_optimizer, exp.model_aggregator)


def _fed_sgd(exp):
  work = fed_sgd.build_gradient_client_work(exp.task.model_fn, WEIGHTINGS[exp.algo_cfg.client_weighting])
  return fed_avg.compose(exp.task.model_fn, wrap_client_work(exp, work), exp.server_optimizer, exp.model_aggregator)


register('fedavg', _fed_avg)
register('fedprox', _fed_avg)
register('fedsgd', _fed_sgd)
