"""FedAvg, FedProx and the FedOpt family as `tff.learning.templates.LearningProcess`es.

Built like TFF's `fed_avg.py`: initial weights, distributor (broadcast), client work (local training, optional
proximal term), aggregator (any `tff.aggregators` factory: weighted, or unweighted and wrapped with
`tff.aggregators.as_weighted_aggregator`), finalizer (server optimizer applied to the averaged delta). With server SGD
at learning rate 1 this is McMahan et al. (2017); other server optimizers give FedAvgM / FedAdam / FedYogi /
FedAdagrad (Reddi et al. 2021); `proximal_mu > 0` gives FedProx (Li et al. 2020).
"""

from typing import Optional, Union

import numpy as np
import tensorflow_federated as tff

from tff_fl.algorithms import client_work as client_work_lib

ClientWeighting = tff.learning.ClientWeighting
AnyFactory = Union[tff.aggregators.WeightedAggregationFactory, tff.aggregators.UnweightedAggregationFactory]


def initial_weights_computation(model_fn: client_work_lib.ModelFn) -> tff.Computation:
  """`( -> ModelWeights)`: weights of a freshly built model."""

  @tff.tensorflow.computation()
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(model_fn())

  return initial_model_weights_fn


def build_model_aggregator(model_aggregator: Optional[AnyFactory], update_type) -> tff.templates.AggregationProcess:
  """Creates the weighted aggregation process for `update_type`; unweighted factories ignore the weights."""
  if model_aggregator is None:
    model_aggregator = tff.aggregators.MeanFactory()
  if isinstance(model_aggregator, tff.aggregators.UnweightedAggregationFactory):
    model_aggregator = tff.aggregators.as_weighted_aggregator(model_aggregator)
  if not isinstance(model_aggregator, tff.aggregators.WeightedAggregationFactory):
    raise TypeError('model_aggregator must be a tff.aggregators.WeightedAggregationFactory or '
                    f'UnweightedAggregationFactory; got {type(model_aggregator).__name__}.')
  aggregator = model_aggregator.create(update_type, tff.TensorType(np.float32))
  params = aggregator.next.type_signature.parameter
  if params[1].member != aggregator.next.type_signature.result[1].member:
    raise TypeError('model_aggregator must return values of the type it receives; got '
                    f'{params[1].member} -> {aggregator.next.type_signature.result[1].member}.')
  return aggregator


def compose(model_fn: client_work_lib.ModelFn, client_work: tff.learning.templates.ClientWorkProcess,
            server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
            model_aggregator: Optional[AnyFactory] = None,
            model_distributor: Optional[tff.learning.templates.DistributionProcess] = None,
            ) -> tff.learning.templates.LearningProcess:
  """Composes any client work that returns model deltas with broadcast, aggregation and a server optimizer."""
  initial_fn = initial_weights_computation(model_fn)
  weights_type = initial_fn.type_signature.result
  if server_optimizer is None:
    server_optimizer = tff.learning.optimizers.build_sgdm(learning_rate=1.0)
  if model_distributor is None:
    model_distributor = tff.learning.templates.build_broadcast_process(weights_type)
  aggregator = build_model_aggregator(model_aggregator, weights_type.trainable)
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type)
  return tff.learning.templates.compose_learning_process(
      initial_fn, model_distributor, client_work, aggregator, finalizer)


def build_fed_avg(model_fn: client_work_lib.ModelFn,
                  client_optimizer: tff.learning.optimizers.Optimizer,
                  server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *,
                  client_weighting: ClientWeighting = ClientWeighting.NUM_EXAMPLES,
                  proximal_mu: float = 0.0,
                  model_aggregator: Optional[AnyFactory] = None,
                  model_distributor: Optional[tff.learning.templates.DistributionProcess] = None,
                  metrics_aggregator=None) -> tff.learning.templates.LearningProcess:
  """FedAvg / FedOpt (server_optimizer) / FedProx (proximal_mu > 0).

  Args:
    model_fn: no-arg callable returning a fresh `tff.learning.models.VariableModel`.
    client_optimizer: `tff.learning.optimizers.Optimizer` for local steps.
    server_optimizer: applied to the aggregated delta; default SGD with learning rate 1 (plain FedAvg).
    client_weighting: NUM_EXAMPLES (McMahan et al.) or UNIFORM.
    proximal_mu: FedProx proximal coefficient (>= 0).
    model_aggregator: any `tff.aggregators` factory (ours or TFF's); default `tff.aggregators.MeanFactory()`.
    model_distributor: default `tff.learning.templates.build_broadcast_process`.
    metrics_aggregator: default `tff.learning.metrics.sum_then_finalize`.
  """
  work = client_work_lib.build_local_training_client_work(
      model_fn, client_optimizer, client_weighting=client_weighting, proximal_mu=proximal_mu,
      metrics_aggregator=metrics_aggregator)
  return compose(model_fn, work, server_optimizer, model_aggregator, model_distributor)


def build_fed_prox(model_fn: client_work_lib.ModelFn, client_optimizer: tff.learning.optimizers.Optimizer,
                   server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *, proximal_mu: float,
                   **kwargs) -> tff.learning.templates.LearningProcess:
  """FedProx (Li et al. 2020): FedAvg whose clients minimise loss + (mu/2)||w - w_server||^2."""
  return build_fed_avg(model_fn, client_optimizer, server_optimizer, proximal_mu=proximal_mu, **kwargs)
