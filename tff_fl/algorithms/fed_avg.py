"""FedAvg, FedProx and the FedOpt family: the algorithm definition with every extension empty (+ a proximal term).

With server SGD at learning rate 1 this is McMahan et al. (2017); other server optimizers give FedAvgM / FedAdam /
FedYogi / FedAdagrad (Reddi et al. 2021); `proximal_mu > 0` gives FedProx (Li et al. 2020): clients minimise
loss + (mu/2)||w - w_server||^2. `build_fed_avg` exports the stock `tff.learning.templates.LearningProcess`;
`tff_fl.engine.build_process(FedAvg(...), ...)` runs the same definition on packed clients.
"""

import dataclasses
from typing import Optional

import tensorflow_federated as tff

from tff_fl.algorithms import definition
from tff_fl.algorithms import model_types
from tff_fl.algorithms import stock

ClientWeighting = tff.learning.ClientWeighting
AnyFactory = model_types.AnyFactory


@dataclasses.dataclass(frozen=True)
class FedAvg(definition.Algorithm):
  """Local training from the broadcast model; the update is initial - final weights. `proximal_mu` >= 0."""
  proximal_mu: float = 0.0

  @property
  def name(self):
    return 'fedprox' if self.proximal_mu > 0 else 'fedavg'

  def validate(self, num_clients=None):
    del num_clients
    if not self.proximal_mu >= 0:
      raise ValueError(f'proximal_mu must be >= 0; got {self.proximal_mu}.')

  def client_update(self, ctx):
    return definition.client_output(ctx.train(proximal_mu=float(self.proximal_mu)))


def build_fed_avg(model_fn: model_types.ModelFn,
                  client_optimizer: tff.learning.optimizers.Optimizer,
                  server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *,
                  client_weighting: ClientWeighting = ClientWeighting.NUM_EXAMPLES,
                  proximal_mu: float = 0.0,
                  model_aggregator: Optional[AnyFactory] = None,
                  model_distributor: Optional[tff.learning.templates.DistributionProcess] = None,
                  metrics_aggregator=None) -> tff.learning.templates.LearningProcess:
  """FedAvg / FedOpt (server_optimizer) / FedProx (proximal_mu > 0) as a stock LearningProcess.

  Args:
    model_fn: no-arg callable returning a fresh `tff.learning.models.VariableModel`.
    client_optimizer: `tff.learning.optimizers.Optimizer` for local steps.
    server_optimizer: applied to the averaged delta; default SGD with learning rate 1 (plain FedAvg).
    client_weighting: NUM_EXAMPLES (McMahan et al.) or UNIFORM.
    proximal_mu: FedProx proximal coefficient (>= 0).
    model_aggregator: any `tff.aggregators` factory (ours or TFF's); default `tff.aggregators.MeanFactory()`.
    model_distributor: default `tff.learning.templates.build_broadcast_process`.
    metrics_aggregator: default `tff.learning.metrics.sum_then_finalize`.
  """
  return stock.build_learning_process(
      FedAvg(float(proximal_mu)), model_fn, client_optimizer, server_optimizer, client_weighting=client_weighting,
      model_aggregator=model_aggregator, model_distributor=model_distributor, metrics_aggregator=metrics_aggregator)


def build_fed_prox(model_fn: model_types.ModelFn, client_optimizer: tff.learning.optimizers.Optimizer,
                   server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *, proximal_mu: float,
                   **kwargs) -> tff.learning.templates.LearningProcess:
  """FedProx (Li et al. 2020): FedAvg whose clients minimise loss + (mu/2)||w - w_server||^2."""
  return build_fed_avg(model_fn, client_optimizer, server_optimizer, proximal_mu=proximal_mu, **kwargs)

