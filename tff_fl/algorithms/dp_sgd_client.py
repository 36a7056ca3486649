"""Sample-level DP-SGD in local training: an `Extension` for every algorithm on the engine, and stock exports.

Every local step of the package's one local-training loop (`local_training.train`, option `LocalOptions(dp=...)`)
then uses, for a batch of B examples:

  per-example gradients g_i  = d loss_i / d w              (`tape.jacobian`, vectorized with pfor)
  clipped, summed and noised = sum_i g_i * C / max(||g_i||, C)  +  N(0, (z C)^2 I)
  gradient fed to optimizer  = noised sum / B

That is the law of tensorflow-privacy's `GaussianSumQuery(l2_norm_clip=C, stddev=z * C)` (the query behind its DP
Keras optimizers; tests/algorithms/test_dp_sgd_client.py checks a step against its DP Keras SGD), so every example
moves the summed gradient by at most C in L2 norm; the noise is drawn fresh for every batch of every client. On the
engine (`SampleDP`) it is a pseudo-random function of (client's seed of the round, pass, step, leaf), so runs repeat
exactly under any layout of slots and workers, like `aggregators.seeded_queries`, and on the engine's client axis
(`client_axis._dp_gradients`: per-example norms of Dense models without per-example gradients, the same
noise); the stock exports draw unseeded
noise (a deployment should use a secure source). Regularization losses of the model are not used; a sequence example's loss is the mean over its
targets. Algorithms add their terms (proximal, SCAFFOLD's correction) after the DP gradient; FedSGD's one gradient
per batch is the DP gradient. Example-level epsilon: `tff_fl.privacy.accounting.example_level_epsilon`.

  engine.build_process(Scaffold(0.1, n), ..., extensions=[SampleDP(1.0, 1.1, loss)])   # any algorithm
  build_dp_sgd_fed_avg(model_fn, sgd, loss, 1.0, 1.1)                                 # stock LearningProcess
"""

from typing import Optional, Union

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import extension
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import local_training
from tff_fl.algorithms import model_types
from tff_fl.algorithms import stock

PerExampleLoss = local_training.PerExampleLoss  # (y_true [B, ...], y_pred [B, ...]) -> [B, ...]
LossArg = Union[PerExampleLoss, tf.keras.losses.Loss]


def dp_options(per_example_loss: LossArg, l2_norm_clip: float, noise_multiplier: float) -> local_training.DPSGD:
  """Validated `DPSGD` option: a Keras `Loss` (its unreduced `call`) or a callable giving per-example losses."""
  if isinstance(l2_norm_clip, bool) or not isinstance(l2_norm_clip, (int, float)) or not l2_norm_clip > 0:
    raise ValueError(f'l2_norm_clip must be a positive number, got {l2_norm_clip!r}.')
  if isinstance(noise_multiplier, bool) or not isinstance(noise_multiplier, (int, float)) or not noise_multiplier >= 0:
    raise ValueError(f'noise_multiplier must be a non-negative number, got {noise_multiplier!r}.')
  if isinstance(per_example_loss, tf.keras.losses.Loss):
    per_example_loss = per_example_loss.call
  elif not callable(per_example_loss):
    raise ValueError(f'per_example_loss must be a tf.keras.losses.Loss or a callable, got {per_example_loss!r}.')
  return local_training.DPSGD(float(l2_norm_clip), float(noise_multiplier), per_example_loss)


NOISE_STREAM = 0x5D9  # Second word of the DP-SGD noise key (first: the client's seed of the round).


class SampleDP(extension.Extension):
  """DP-SGD in every client's local training (module docstring); composes with every algorithm."""

  name = 'sample_dp'

  def client_axis_limit(self, functional_model) -> str:
    if not functional_model.shared_step:
      return ('DP-SGD on the client axis takes per-example gradient norms from Dense layers on [B, features] only '
              f"(this model: {', '.join(functional_model.layer_kinds)})")
    return ''

  def __init__(self, l2_norm_clip: float, noise_multiplier: float, per_example_loss: LossArg):
    self.dp = dp_options(per_example_loss, l2_norm_clip, noise_multiplier)

  def local_options(self, bcast, info) -> local_training.LocalOptions:
    """DP-SGD with its noise keyed by the client's seed of the round (reproducible, whatever the engine layout)."""
    del bcast
    key = tf.stack([tf.cast(info['seed'], tf.int64), tf.constant(NOISE_STREAM, tf.int64)])
    return local_training.LocalOptions(dp=self.dp, noise_key=key)


def build_dp_sgd_client_work(
    model_fn: model_types.ModelFn,
    optimizer: tff.learning.optimizers.Optimizer,
    per_example_loss: LossArg,
    l2_norm_clip: float,
    noise_multiplier: float,
    client_weighting: tff.learning.ClientWeighting = tff.learning.ClientWeighting.UNIFORM,
    metrics_aggregator: Optional[tff.learning.metrics.MetricsAggregatorType] = None,
) -> tff.learning.templates.ClientWorkProcess:
  """Local DP-SGD client work (stock `ClientWorkProcess`, stateless): FedAvg's client update under DP-SGD.

  Args:
    model_fn: no-arg callable building a fresh `tff.learning.models.VariableModel`.
    optimizer: the local `tff.learning.optimizers.Optimizer`, applied to the noised mean gradient.
    per_example_loss: the model's training loss as a `tf.keras.losses.Loss` (its unreduced `call` is used) or a
      callable (labels, predictions) -> per-example losses [B], e.g. `tf.keras.losses.sparse_categorical_crossentropy`.
    l2_norm_clip: per-example gradient clip norm C (> 0).
    noise_multiplier: z >= 0; noise stddev on each batch's summed gradient is z * C.
    client_weighting: `UNIFORM` (default: the weight reveals nothing about the data) or `NUM_EXAMPLES`.
    metrics_aggregator: as in `tff.learning.templates.build_model_delta_client_work`.
  """
  dp = dp_options(per_example_loss, l2_norm_clip, noise_multiplier)
  if not isinstance(client_weighting, tff.learning.ClientWeighting):
    raise ValueError(f'client_weighting must be a tff.learning.ClientWeighting, got {client_weighting!r}.')
  return stock.build_client_work(fed_avg.FedAvg(), model_fn, optimizer, client_weighting=client_weighting,
                                 metrics_aggregator=metrics_aggregator, options=local_training.LocalOptions(dp=dp))


def build_dp_sgd_fed_avg(
    model_fn: model_types.ModelFn,
    client_optimizer: tff.learning.optimizers.Optimizer,
    per_example_loss: LossArg,
    l2_norm_clip: float,
    noise_multiplier: float,
    server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
    model_aggregator: Optional[model_types.AnyFactory] = None,
) -> tff.learning.templates.LearningProcess:
  """Unweighted FedAvg whose clients run local DP-SGD, as a stock LearningProcess.

  `model_aggregator` (default `UnweightedMeanFactory`) may itself be a client-level DP aggregator.
  """
  dp = dp_options(per_example_loss, l2_norm_clip, noise_multiplier)
  return stock.build_learning_process(
      fed_avg.FedAvg(), model_fn, client_optimizer, server_optimizer,
      client_weighting=tff.learning.ClientWeighting.UNIFORM,
      model_aggregator=model_aggregator or tff.aggregators.UnweightedMeanFactory(),
      options=local_training.LocalOptions(dp=dp))
