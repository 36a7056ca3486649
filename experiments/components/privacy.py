"""Component: differential privacy (client-level DP-FedAvg / DP-FTRL, sample-level DP-SGD) with accounting.

  --dp=none|fixed|adaptive|tree  --noise_multiplier  --clip_norm  --target_unclipped_quantile
                                             (--dp makes --client_weighting=uniform the default)
  --client_sampling=uniform|poisson|cyclic   one object (`ClientDPPlan`) owns both the sampler and its dp-accounting
                                             event, so accounting for one scheme while sampling another is impossible
  --accountant=rdp|pld  --target_delta  --target_epsilon   epsilon is a metrics.csv column every round; training stops
                                             before the round that would exceed --target_epsilon
  --secure_bits=N                            distributed DP: discrete Gaussian shares summed by TFF secure sum
  --sample_dp --sample_noise_multiplier --sample_clip_norm   DP-SGD inside local training (example-level DP): the
                                             `SampleDP` extension, so every algorithm's local steps run DP-SGD;
                                             reported as example_epsilon

Under --dp or --sample_dp the run writes only what `privacy_release.RELEASES` declares covered (accounted by
epsilon, public, or pooled evaluation of the released model on held-out data); it suppresses the rest (e.g.
training loss, per-client accuracy, clients.csv) and refuses, before training, flags that would compute values from
client data outside the mechanism (e.g. --drift_metrics); summary.json's privacy.released lists what was released,
what covers it, and what was suppressed.
"""

from absl import flags
import tensorflow as tf

from experiments import flag_groups
from experiments.components import privacy_release
from tff_fl import tasks as tasks_lib
from tff_fl.algorithms import dp_sgd_client
from tff_fl.privacy import plan as plan_lib
from tff_fl.simulation import privacy_hooks as hooks

FLAGS = flags.FLAGS


def define_flags() -> None:
  d = flag_groups.define_flag
  d('string', 'dp', 'none', 'client-level DP aggregator: none, fixed, adaptive, tree (DP-FTRL)')
  d('float', 'noise_multiplier', 0.0, 'Gaussian noise stddev / clip norm of the client-level DP aggregator')
  d('float', 'clip_norm', 1.0, 'L2 clip norm of client updates (initial norm for --dp=adaptive)')
  d('float', 'target_unclipped_quantile', 0.5, '--dp=adaptive: fraction of updates left unclipped (Andrew et al.)')
  d('string', 'client_sampling', 'uniform', f"client sampling with its accounting: {', '.join(plan_lib.CLIENT_SAMPLING)}"
    ' (poisson: rate --clients_per_round/--num_clients; cyclic: DP-FTRL epochs, needs --dp=tree)')
  d('string', 'accountant', 'rdp', 'dp-accounting accountant: rdp or pld (pld with poisson sampling)')
  d('float', 'target_delta', 1e-5, 'delta at which epsilon is reported')
  d('float', 'target_epsilon', None, 'privacy budget: stop before the round that would exceed it')
  d('integer', 'secure_bits', 0, 'distributed DP through TFF secure sum with this bit width (0: off)')
  d('bool', 'sample_dp', False, 'DP-SGD on clients: per-example clipping and Gaussian noise in local training')
  d('float', 'sample_noise_multiplier', 1.0, '--sample_dp: noise stddev / per-example clip norm')
  d('float', 'sample_clip_norm', 1.0, '--sample_dp: per-example gradient clip norm')


def flag_defaults() -> None:
  """--dp weights clients uniformly (DP-FedAvg; a weight would leak the example count) unless the user set
  --client_weighting, which `configure` then checks."""
  if FLAGS.dp != 'none' and FLAGS['client_weighting'].using_default_value:
    FLAGS['client_weighting'].value = 'uniform'


def _sampling_flags() -> str:
  on = [f'--dp={FLAGS.dp}'] if FLAGS.dp != 'none' else []
  on += [f'--client_sampling={FLAGS.client_sampling}'] if FLAGS.client_sampling != 'uniform' else []
  on += ['--target_epsilon'] if FLAGS.target_epsilon is not None else []
  return '/'.join(on or ['--sample_dp'])


def _check_secure_bits_engine(exp) -> None:
  if exp.engine != 'tff':
    # TFF's distributed-DP client encoding imports TF1 control flow that cannot run inside the engine's client loop.
    raise ValueError(f'--secure_bits (distributed DP) runs on --engine=tff only; got --engine={exp.engine}.')


def configure(exp) -> None:
  if FLAGS.secure_bits and FLAGS.dp not in ('fixed', 'adaptive'):
    raise ValueError(f'--secure_bits needs --dp=fixed|adaptive (distributed DP over secure sum); got --dp={FLAGS.dp}.')
  client_dp = FLAGS.dp != 'none' or FLAGS.client_sampling != 'uniform' or FLAGS.target_epsilon is not None
  if not (client_dp or FLAGS.sample_dp):
    return
  privacy_release.check_flags(FLAGS)
  if FLAGS.dp != 'none' and exp.algo_cfg.client_weighting != 'uniform':
    raise ValueError('--dp needs --client_weighting=uniform, its default with --dp (DP-FedAvg weights clients '
                     'equally; a weight would leak the example count).')
  if FLAGS.secure_bits < 0:
    raise ValueError(f'--secure_bits must be >= 0 (0 disables secure aggregation); got {FLAGS.secure_bits}.')
  if FLAGS.secure_bits:
    exp.build_checks.append(_check_secure_bits_engine)
  plan = plan_lib.build_client_dp_plan(
      FLAGS.dp, len(exp.task.client_ids), exp.loop_cfg.clients_per_round,
      noise_multiplier=FLAGS.noise_multiplier, clip_norm=FLAGS.clip_norm,
      target_unclipped_quantile=FLAGS.target_unclipped_quantile, client_sampling=FLAGS.client_sampling,
      accountant=FLAGS.accountant, target_delta=FLAGS.target_delta, target_epsilon=FLAGS.target_epsilon,
      secure_bits=FLAGS.secure_bits or None, seed=exp.task_cfg.seed)
  # The sampler must match the accounting: a component sampling clients itself is refused (Experiment.set_sampler).
  exp.set_sampler(hooks.BoundSampler(plan, exp.task.client_ids), _sampling_flags())
  if FLAGS.dp != 'none':
    # Reproducible noise for fixed/adaptive/tree: same --seed, same noise, also after a resume.
    exp.set_model_aggregator(plan.build_aggregator(exp.task.model_fn, noise_seed=tasks_lib.derived_seed(
        exp.loop_cfg.seed, 0, 'dp_noise')), f'--dp={FLAGS.dp}')
  sample_level = None
  if FLAGS.sample_dp:
    if not FLAGS.sample_clip_norm > 0:
      raise ValueError(f'--sample_clip_norm must be > 0; got {FLAGS.sample_clip_norm}.')
    if not FLAGS.sample_noise_multiplier >= 0:
      raise ValueError(f'--sample_noise_multiplier must be >= 0; got {FLAGS.sample_noise_multiplier}.')
    # Every task's model is trained on cross-entropy of logits (per example: mean over a sequence's targets).
    exp.add_extension(dp_sgd_client.SampleDP(
        FLAGS.sample_clip_norm, FLAGS.sample_noise_multiplier,
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.NONE)),
        '--sample_dp')
    sample_level = plan_lib.SampleLevelAccountant(FLAGS.sample_noise_multiplier, exp.loop_cfg.client_epochs_per_round)
  exp.hooks.append(hooks.PrivacyHook(plan, exp.sampler, sample_level))
  delta = f'delta={FLAGS.target_delta:g}'
  exp.release = privacy_release.policy(FLAGS, {
      'client_dp': f'epsilon (client level, {delta}, {FLAGS.accountant} accountant, {FLAGS.client_sampling} '
                   'sampling)',
      'sample_dp': f'example_epsilon (example level, {delta}, the most often sampled client)'})
  if FLAGS.dp != 'none':  # Needs the built algorithm: does its server sum uploads outside the DP aggregator?
    exp.build_checks.append(lambda e: privacy_release.check_algorithm(FLAGS, e.algo_cfg.algorithm, e.algorithm))
