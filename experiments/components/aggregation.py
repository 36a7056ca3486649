"""Component: the model-update aggregator chain (`--aggregator`) and simulated Byzantine clients.

  --aggregator='clip(1.0)>trimmed_mean(0.1)'   stages chained with '>' from client to server (see tff_fl.aggregators)
  --byzantine_fraction=0.2 --attack=sign_flip  that fraction of each round's cohort is malicious
  --attack_scale, --attack_noise_std           strength of sign_flip/scaled and gaussian_noise attacks

Robust aggregators are told the cohort size so a too-small cohort is refused before training starts.
"""

import zlib

from absl import flags

from experiments import flag_groups
from tff_fl import aggregators
from tff_fl.algorithms import attacks
from tff_fl.simulation import regimes
from tff_fl.simulation import training_loop

FLAGS = flags.FLAGS


def define_flags() -> None:
  flag_groups.define_flag('string', 'aggregator', 'mean',
                          "model update aggregator, stages chained with '>' from client to server: "
                          + ', '.join(aggregators.ALLOWED_SPELLINGS))
  flag_groups.define_flag('float', 'byzantine_fraction', 0.0,
                          "fraction of each round's sampled clients that are malicious (rounded down)")
  flag_groups.define_flag('string', 'attack', 'none', f"attack of malicious clients: {', '.join(attacks.ATTACKS)}")
  flag_groups.define_flag('float', 'attack_scale', 10.0, 'sign_flip sends -scale*update; scaled sends scale*update')
  flag_groups.define_flag('float', 'attack_noise_std', 1.0, 'std of the gaussian_noise attack added to the update')


def configure(exp) -> None:
  if FLAGS.aggregator.strip() != 'mean':
    exp.model_aggregator = aggregators.build_aggregator(FLAGS.aggregator, cohort_size=exp.loop_cfg.clients_per_round)
  if FLAGS.attack not in attacks.ATTACKS:
    raise ValueError(f"--attack must be one of {', '.join(attacks.ATTACKS)}; got '{FLAGS.attack}'.")
  if not 0.0 <= FLAGS.byzantine_fraction < 1.0:
    raise ValueError(f'--byzantine_fraction must be in [0, 1); got {FLAGS.byzantine_fraction}.')
  if (FLAGS.attack == 'none') != (FLAGS.byzantine_fraction == 0.0):
    raise ValueError('--attack and --byzantine_fraction go together: set both (e.g. --attack=sign_flip '
                     '--byzantine_fraction=0.2) or neither.')
  if FLAGS.attack == 'none':
    return
  if exp.algo_cfg.algorithm not in ('fedavg', 'fedprox', 'fedsgd'):
    raise ValueError(f'--attack applies to --algorithm=fedavg, fedprox or fedsgd; got {exp.algo_cfg.algorithm}.')
  exp.client_work_wrappers.append(lambda work: attacks.build_attacked_client_work(
      work, FLAGS.attack, scale=FLAGS.attack_scale, noise_std=FLAGS.attack_noise_std,
      num_classes=exp.task.num_classes))
  inputs = exp.client_inputs_fn or training_loop.default_client_inputs(exp.task, exp.loop_cfg)
  hook = AttackHook()
  exp.client_inputs_fn = attacked_inputs(inputs, exp.task_cfg.seed, FLAGS.byzantine_fraction, hook)
  exp.hooks.append(hook)


def attacked_inputs(inputs, seed: int, fraction: float, hook: 'AttackHook'):
  """Wraps `inputs(round, cohort)`: `fraction` of the sampled cohort is malicious (`attacks.choose_byzantine`);
  each reporting client's input carries its flag (dropped clients send nothing, malicious or not)."""
  def client_inputs(round_num, client_ids):
    bad = attacks.choose_byzantine(client_ids, fraction, seed, round_num)
    datasets = inputs(round_num, client_ids)
    reported = regimes.reported_clients(inputs, client_ids, len(datasets))
    hook.note(round_num, [cid in bad for cid in reported])
    return [attacks.attacked_client_data(d, cid in bad, seed=zlib.crc32(f'{seed}/{round_num}/{cid}'.encode()) >> 1)
            for cid, d in zip(reported, datasets)]

  return client_inputs


class AttackHook(training_loop.RoundHook):
  """metrics.csv columns `attack/malicious` (malicious clients among those that reported) and, when the aggregator
  reports Krum's `.../selected_indices/i` (positions among the reporting clients), `attack/malicious_selected`."""
  name = 'attack'

  def __init__(self):
    self.round_num, self.malicious = None, []

  def note(self, round_num: int, malicious: list) -> None:
    self.round_num, self.malicious = round_num, list(malicious)

  def after_round(self, round_num, output, row) -> None:
    del output
    if round_num != self.round_num:
      return
    row['attack/malicious'] = sum(self.malicious)
    selected = [int(v) for k, v in row.items() if '/selected_indices/' in k]
    if selected:
      row['attack/malicious_selected'] = sum(self.malicious[i] for i in selected if 0 <= i < len(self.malicious))
