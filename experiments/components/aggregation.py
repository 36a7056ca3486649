"""Component: the model-update aggregator chain (`--aggregator`) and simulated Byzantine clients.

  --aggregator='clip(1.0)>trimmed_mean(0.1)'   stages chained with '>' from client to server (see tff_fl.aggregators)
  --byzantine_fraction=0.2 --attack=sign_flip  that fraction of each round's cohort is malicious
  --attack_scale, --attack_noise_std           strength of sign_flip/scaled and gaussian_noise attacks

Robust aggregators are told the cohort size so a too-small cohort is refused before training starts. The SecAgg
stages (`secagg(bits,threshold)>mean`, `secagg_plus(bits,threshold,k)>mean`) get the cohort size and --seed, add
the `SecAggInput` extension (each client's place among the sampled clients, so dropouts from --dropout_rate hit
after masking) and the columns secagg/aborted, secagg/survivors, secagg/threshold, secagg/bits_per_client; an
aborted round (fewer than t survivors) leaves the model as it was and the run goes on. Attacks are
an extension of the round (`tff_fl.algorithms.attacks.ByzantineAttack`), so they apply to every algorithm: the
malicious clients are chosen among each round's sampled clients and only those that report attack.
"""

from absl import flags
import numpy as np

from experiments import flag_groups
from tff_fl import aggregators
from tff_fl.aggregators import spec as spec_lib
from tff_fl.algorithms import attacks
from tff_fl.algorithms import secagg_input
from tff_fl.simulation import training_loop

FLAGS = flags.FLAGS


def define_flags() -> None:
  flag_groups.define_flag('string', 'aggregator', 'mean',
                          "model update aggregator, stages chained with '>' from client to server: "
                          + ', '.join(aggregators.allowed_spellings()))
  flag_groups.define_flag('float', 'byzantine_fraction', 0.0,
                          "fraction of each round's sampled clients that are malicious (rounded down)")
  flag_groups.define_flag('string', 'attack', 'none', f"attack of malicious clients: {', '.join(attacks.ATTACKS)}")
  flag_groups.define_flag('float', 'attack_scale', 10.0, 'sign_flip sends -scale*update; scaled sends scale*update')
  flag_groups.define_flag('float', 'attack_noise_std', 1.0, 'std of the gaussian_noise attack added to the update')


def configure(exp) -> None:
  if FLAGS.aggregator.strip() != 'mean':
    exp.set_model_aggregator(aggregators.build_aggregator(FLAGS.aggregator, cohort_size=exp.loop_cfg.clients_per_round,
                                                          seed=exp.loop_cfg.seed), f'--aggregator={FLAGS.aggregator}')
    if {'secagg', 'secagg_plus'} & set(spec_lib.stage_names(FLAGS.aggregator)):
      exp.add_extension(secagg_input.SecAggInput(exp.loop_cfg.clients_per_round), f'--aggregator={FLAGS.aggregator}')
      exp.hooks.append(SecAggHook())
  if FLAGS.attack not in attacks.ATTACKS:
    raise ValueError(f"--attack must be one of {', '.join(attacks.ATTACKS)}; got '{FLAGS.attack}'.")
  if not 0.0 <= FLAGS.byzantine_fraction < 1.0:
    raise ValueError(f'--byzantine_fraction must be in [0, 1); got {FLAGS.byzantine_fraction}.')
  if (FLAGS.attack == 'none') != (FLAGS.byzantine_fraction == 0.0):
    raise ValueError('--attack and --byzantine_fraction go together: set both (e.g. --attack=sign_flip '
                     '--byzantine_fraction=0.2) or neither.')
  if FLAGS.attack == 'none':
    return
  if FLAGS.attack == 'gaussian_noise' and not FLAGS.attack_noise_std >= 0:
    raise ValueError(f'--attack_noise_std must be >= 0; got {FLAGS.attack_noise_std}.')
  attack = attacks.ByzantineAttack(FLAGS.attack, FLAGS.byzantine_fraction, exp.task_cfg.seed,
                                   scale=FLAGS.attack_scale, noise_std=FLAGS.attack_noise_std,
                                   num_classes=exp.task.num_classes)
  exp.add_extension(attack, f'--attack={FLAGS.attack}')
  exp.hooks.append(AttackHook(attack))


class AttackHook(training_loop.RoundHook):
  """metrics.csv columns `attack/malicious` (malicious clients among those that reported) and, when the aggregator
  reports Krum's `.../selected_indices/i` (positions among the reporting clients), `attack/malicious_selected`;
  both from the flags the attack extension packed for the round (`last_round`, `last_malicious`)."""
  name = 'attack'

  def __init__(self, attack: attacks.ByzantineAttack):
    self.attack = attack

  def after_round(self, round_num, output, row) -> None:
    del output
    if round_num != self.attack.last_round:
      return
    malicious = self.attack.last_malicious
    row['attack/malicious'] = sum(malicious)
    selected = [int(v) for k, v in row.items() if '/selected_indices/' in k]
    if selected:
      row['attack/malicious_selected'] = sum(malicious[i] for i in selected if 0 <= i < len(malicious))


class SecAggHook(training_loop.RoundHook):
  """metrics.csv columns secagg/aborted (1 if the round aborted: fewer than t surviving holders), secagg/survivors,
  secagg/threshold (t) and secagg/bits_per_client, from the aggregator's `.../secagg/...` measurements; summary
  secagg_aborted_rounds."""
  name = 'secagg'
  COLUMNS = ('aborted', 'survivors', 'threshold', 'bits_per_client')

  def __init__(self):
    self.aborted_rounds = 0

  def after_round(self, round_num, output, row) -> None:
    del round_num, output
    for column in self.COLUMNS:
      values = [v for k, v in row.items() if k.startswith('aggregator/') and k.endswith(f'secagg/{column}')]
      if values:
        row[f'secagg/{column}'] = values[0]
    self.aborted_rounds += int(row.get('secagg/aborted', 0) or 0)

  def checkpoint_arrays(self):
    return {'aborted_rounds': np.array(self.aborted_rounds, np.int64)}

  def restore_arrays(self, arrays) -> None:
    if 'aborted_rounds' in arrays:
      self.aborted_rounds = int(arrays['aborted_rounds'])

  def summary(self):
    return {'secagg_aborted_rounds': self.aborted_rounds}
