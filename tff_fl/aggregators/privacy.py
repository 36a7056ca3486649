"""Client-level DP aggregators: stock `tff.aggregators` factories chosen from flag values.

All noise comes from tensorflow-privacy DP queries inside TFF's `DifferentiallyPrivateFactory`:

* `fixed`: `DifferentiallyPrivateFactory.gaussian_fixed` -- clip each client update to L2 norm `clip_norm`,
  sum, add N(0, (noise_multiplier * clip_norm)^2), divide by the *expected* cohort size.
* `adaptive`: `DifferentiallyPrivateFactory.gaussian_adaptive` -- as `fixed`, but the clip norm starts at
  `clip_norm` and follows the `target_unclipped_quantile` of update norms (Andrew et al. 2021, geometric
  update). `noise_multiplier` is the total (value + clipped-count) noise multiplier.
* `tree`: DP-FTRL's tree-aggregated noise (Kairouz et al. 2021): the query of
  `DifferentiallyPrivateFactory.tree_aggregation` (`TreeResidualSumQuery`; each round releases the residual of
  the noised prefix sums) wrapped, as TFF's `tree_adaptive` does, in a `RestartQuery` that starts a fresh tree
  every `tree_restart_rounds` rounds -- one epoch of `CyclicSampler`, which is what the accountant assumes.
  Pair it with a plain SGD server optimizer.

With `secure_bits`, `fixed`/`adaptive` run as distributed DP (TFF's `distributed_dp.DistributedDpSumFactory`:
rotation, scaling, randomized rounding and discrete Gaussian noise shares added on clients, then a
`secure_bits`-bit secure modular sum; the cohort count goes through `SecureSumFactory`), which is how TFF composes
DP with secure aggregation. The noised records are only ever summed through the secure sum intrinsics. Its
privacy is accounted as a Gaussian with `noise_multiplier` (an approximation: rounding inflates the sensitivity
slightly and dp-accounting 0.4.3 has no discrete-Gaussian event). Its computations are returned in TFF's
call-dominant form (`tff.framework.to_call_dominant`, same semantics): the nested form is ~40 building blocks deep,
and inside a learning process its proto exceeds the 100-level nesting limit of protobuf's upb parser.
"""

from collections.abc import Callable
from typing import Any, Optional

import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tff_fl.aggregators import seeded_queries

DP_MODES = ('none', 'fixed', 'adaptive', 'tree')
# TFF's DistributedDpSumFactory keeps its integers in float32, so it caps the secure-sum width at 22 bits.
MAX_SECURE_BITS = 22


def model_trainable_specs(model_fn: Callable[[], tff.learning.models.VariableModel]) -> list[tf.TensorSpec]:
  """`tf.TensorSpec`s of the trainable weights (the `record_specs` that `dp='tree'` needs)."""
  with tf.Graph().as_default():
    weights_type = tff.learning.models.weights_type_from_model(model_fn())
  return list(tff.types.type_to_tf_tensor_specs(weights_type.trainable))


def _check_positive(value, name):
  if not isinstance(value, (int, float)) or not value > 0:
    raise ValueError(f'{name} must be a positive number, got {value!r}.')


def validate_dp_flags(dp: str, noise_multiplier: float, clip_norm: float, clients_per_round: float,
                      target_unclipped_quantile: float = 0.5, secure_bits: Optional[int] = None) -> None:
  """Raises a one-line ValueError naming the first bad argument."""
  if dp not in DP_MODES:
    raise ValueError(f'dp must be one of {"|".join(DP_MODES)}, got {dp!r}.')
  if not isinstance(noise_multiplier, (int, float)) or not noise_multiplier >= 0:
    raise ValueError(f'noise_multiplier must be a non-negative number, got {noise_multiplier!r}.')
  _check_positive(clip_norm, 'clip_norm')
  _check_positive(clients_per_round, 'clients_per_round')
  if not 0.0 <= target_unclipped_quantile <= 1.0:
    raise ValueError(f'target_unclipped_quantile must be in [0, 1], got {target_unclipped_quantile!r}.')
  if dp == 'adaptive' and noise_multiplier >= 0.1 * clients_per_round:
    raise ValueError(f'noise_multiplier must be < 0.1 * clients_per_round = {0.1 * clients_per_round:g} for '
                     f'dp=adaptive (TFF adds clipped-count noise of stddev 0.05 * cohort), got {noise_multiplier}.')
  if secure_bits is not None:
    if dp not in ('fixed', 'adaptive'):
      raise ValueError(f'secure_bits composes only with dp=fixed|adaptive (distributed DP), got dp={dp!r}.')
    if not isinstance(secure_bits, int) or not 1 <= secure_bits <= MAX_SECURE_BITS:
      raise ValueError(f'secure_bits must be an integer in [1, {MAX_SECURE_BITS}], got {secure_bits!r}.')
    if int(clients_per_round) != clients_per_round:
      raise ValueError(f'clients_per_round must be a whole number with secure_bits, got {clients_per_round!r}.')


def build_secure_dp_aggregator(dp: str, noise_multiplier: float, clip_norm: float, clients_per_round: int,
                               bits: int, target_unclipped_quantile: float = 0.5,
                               clip_learning_rate: float = 0.2) -> tff.aggregators.UnweightedAggregationFactory:
  """Distributed DP (discrete Gaussian shares) + `bits`-bit secure sum, averaged over the securely summed count."""
  validate_dp_flags(dp, noise_multiplier, clip_norm, clients_per_round, target_unclipped_quantile, bits)
  ddp_sum = tff.aggregators.distributed_dp.DistributedDpSumFactory(
      noise_multiplier=float(noise_multiplier),
      expected_clients_per_round=int(clients_per_round),
      bits=bits,
      l2_clip=float(clip_norm),
      mechanism='distributed_dgauss',
      rotation_type='hd',
      auto_l2_clip=(dp == 'adaptive'),
      auto_l2_target_quantile=float(target_unclipped_quantile),
      auto_l2_lr=float(clip_learning_rate))
  return _CallDominantMeanFactory(
      value_sum_factory=ddp_sum,
      count_sum_factory=tff.aggregators.SecureSumFactory(upper_bound_threshold=1, lower_bound_threshold=0))


def _call_dominant(comp: tff.Computation) -> tff.Computation:
  """`comp` flattened to one block of locals (same semantics and type signature, containers included)."""
  flat = tff.framework.to_call_dominant(comp.to_building_block())
  return tff.framework.ConcreteComputation(
      computation_proto=flat.proto, context_stack=tff.framework.get_context_stack(),
      annotated_type=comp.type_signature)


class _CallDominantMeanFactory(tff.aggregators.UnweightedMeanFactory):
  """`UnweightedMeanFactory` whose processes are call-dominant, so deep inner sums nest in a learning process."""

  def create(self, value_type) -> tff.templates.AggregationProcess:
    process = super().create(value_type)
    return tff.templates.AggregationProcess(_call_dominant(process.initialize), _call_dominant(process.next))


def build_dp_aggregator(dp: str, noise_multiplier: float, clip_norm: float, clients_per_round: float,
                        target_unclipped_quantile: float = 0.5, *, clip_learning_rate: float = 0.2,
                        record_specs: Optional[Any] = None,
                        tree_restart_rounds: Optional[int] = None, secure_bits: Optional[int] = None,
                        noise_seed: Optional[int] = None) -> Optional[tff.aggregators.UnweightedAggregationFactory]:
  """The model-update aggregator for `--dp`; None for `dp='none'` (use the algorithm's default).

  Args:
    dp: 'none' | 'fixed' | 'adaptive' | 'tree'.
    noise_multiplier: noise stddev / clip norm (>= 0; 0 means clipping only).
    clip_norm: L2 clip norm (initial clip norm for 'adaptive').
    clients_per_round: expected cohort size (the sampler's `expected_clients_per_round`).
    target_unclipped_quantile: 'adaptive' only: fraction of updates the clip norm should leave unclipped.
    clip_learning_rate: 'adaptive' only: geometric learning rate of the clip norm.
    record_specs: 'tree' only: `tf.TensorSpec` structure of the aggregated value, e.g.
      `model_trainable_specs(model_fn)`.
    tree_restart_rounds: 'tree' only: rounds per tree (`CyclicSampler.cohorts_per_epoch`).
    secure_bits: if set, run 'fixed'/'adaptive' as distributed DP over a `secure_bits`-bit secure sum.
    noise_seed: seed of the noise ('fixed'/'adaptive': `aggregators.seeded_queries`, 'tree': tfp's tree seed); None
      draws nondeterministic noise from TFF's stock factories. Ignored with `secure_bits` (TFF's distributed DP
      draws its own noise).

  Returns:
    An unweighted aggregation factory producing a (noised) mean, or None.
  """
  validate_dp_flags(dp, noise_multiplier, clip_norm, clients_per_round, target_unclipped_quantile, secure_bits)
  z, clip, cohort = float(noise_multiplier), float(clip_norm), float(clients_per_round)
  if dp == 'none':
    return None
  if secure_bits is not None:
    return build_secure_dp_aggregator(dp, z, clip, int(cohort), secure_bits, target_unclipped_quantile,
                                      clip_learning_rate)
  if noise_seed is not None and dp in ('fixed', 'adaptive'):
    return _seeded_factory(dp, z, clip, cohort, float(target_unclipped_quantile), float(clip_learning_rate),
                           noise_seed)
  if dp == 'fixed':
    return tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(z, cohort, clip)
  if dp == 'adaptive':
    return tff.aggregators.DifferentiallyPrivateFactory.gaussian_adaptive(
        z, cohort, initial_l2_norm_clip=clip, target_unclipped_quantile=float(target_unclipped_quantile),
        learning_rate=float(clip_learning_rate))
  if record_specs is None:
    raise ValueError('record_specs is required for dp=tree; pass model_trainable_specs(model_fn).')
  if not isinstance(tree_restart_rounds, int) or tree_restart_rounds < 1:
    raise ValueError(f'tree_restart_rounds must be a positive integer for dp=tree (rounds per epoch of cyclic '
                     f'sampling), got {tree_restart_rounds!r}.')
  tree_sum = tfp.TreeResidualSumQuery.build_l2_gaussian_query(clip, z, record_specs, noise_seed=noise_seed)
  restarting_sum = tfp.RestartQuery(
      tree_sum, tfp.restart_query.PeriodicRoundRestartIndicator(period=tree_restart_rounds))
  return tff.aggregators.DifferentiallyPrivateFactory(tfp.NormalizedQuery(restarting_sum, denominator=cohort))


def _seeded_factory(dp: str, z: float, clip: float, cohort: float, target_quantile: float, clip_learning_rate: float,
                    seed: int) -> tff.aggregators.DifferentiallyPrivateFactory:
  """`gaussian_fixed` / `gaussian_adaptive` exactly as TFF builds them (same queries, noise split and
  normalisation), with `seeded_queries` in place of tfp's unseeded Gaussian queries."""
  if dp == 'fixed':
    query = seeded_queries.SeededGaussianSumQuery(clip, clip * z, seed)
  else:
    value_z, count_stddev = tff.aggregators.differential_privacy.adaptive_clip_noise_params(z, cohort)
    query = seeded_queries.SeededQuantileAdaptiveClipSumQuery(
        clip, value_z, target_quantile, clip_learning_rate, count_stddev, cohort, geometric_update=True, seed=seed)
  return tff.aggregators.DifferentiallyPrivateFactory(tfp.NormalizedQuery(query, denominator=cohort))
