"""Named algorithms for the binary: name -> learning process built from components.

`fedavg` (McMahan et al. 2017; with a non-SGD server optimizer it is FedOpt, Reddi et al. 2021), `fedprox` (Li et al.
2020, needs mu > 0), `fedsgd` (one full-batch gradient per client per round).
"""

import dataclasses
from typing import Optional

import tensorflow_federated as tff

from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import fed_sgd

ALGORITHMS = ('fedavg', 'fedprox', 'fedsgd')
WEIGHTINGS = {'num_examples': tff.learning.ClientWeighting.NUM_EXAMPLES,
              'uniform': tff.learning.ClientWeighting.UNIFORM}


@dataclasses.dataclass
class AlgorithmConfig:
  algorithm: str = 'fedavg'
  mu: float = 0.0
  client_weighting: str = 'num_examples'

  def validate(self) -> None:
    if self.algorithm not in ALGORITHMS:
      raise ValueError(f"--algorithm must be one of {', '.join(ALGORITHMS)}; got '{self.algorithm}'.")
    if self.client_weighting not in WEIGHTINGS:
      raise ValueError(f"--client_weighting must be one of {', '.join(WEIGHTINGS)}; got '{self.client_weighting}'.")
    if self.mu < 0:
      raise ValueError(f'--mu must be >= 0; got {self.mu}.')
    if self.algorithm == 'fedprox' and self.mu == 0:
      raise ValueError('--algorithm=fedprox needs --mu > 0 (mu = 0 is plain fedavg).')
    if self.algorithm != 'fedprox' and self.mu != 0:
      raise ValueError(f'--mu applies only to --algorithm=fedprox; got --algorithm={self.algorithm} --mu={self.mu}.')


def build_process(cfg: AlgorithmConfig, model_fn, client_optimizer, server_optimizer,
                  model_aggregator: Optional[object] = None) -> tff.learning.templates.LearningProcess:
  cfg.validate()
  weighting = WEIGHTINGS[cfg.client_weighting]
  if cfg.algorithm == 'fedsgd':
    return fed_sgd.build_fed_sgd(model_fn, server_optimizer, client_weighting=weighting,
                                 model_aggregator=model_aggregator)
  return fed_avg.build_fed_avg(model_fn, client_optimizer, server_optimizer, client_weighting=weighting,
                               proximal_mu=cfg.mu, model_aggregator=model_aggregator)
