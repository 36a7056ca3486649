"""Component: participation regimes (cross-device / cross-silo) for any algorithm.

Flags: --regime=custom|cross_device|cross_silo (checks population and cohort against the regime's definition),
--dropout_rate, --straggler_fraction, --straggler_policy=drop|partial, --availability=always|diurnal. Sets
`exp.sampler` (diurnal availability; full participation for cross_silo; column regime/available) and the
experiment's participation (dropouts and per-client stragglers: `regimes.RegimeParticipation`; columns
regime/sampled, dropped, stragglers, partial, reported).

Who decides participation: this component with --straggler_model=per_client (the default), the `stragglers`
component with --straggler_model=fedprox and --straggler_fraction > 0 (FedProx's model, which has no dropouts).
Each reads only the flags to know which one it is; `exp.set_participation` refuses a second setter.
"""

import dataclasses

from absl import flags

from experiments import flag_groups
from tff_fl.simulation import regimes

FLAGS = flags.FLAGS


@dataclasses.dataclass
class RegimeConfig:
  regime: str = 'custom'
  dropout_rate: float = 0.0
  straggler_fraction: float = 0.0
  straggler_policy: str = 'drop'
  availability: str = 'always'


_HELP = {
    'regime': 'custom, cross_device (>= 1000 clients, 0.1-1 percent per round) or cross_silo (2-100 clients, all every '
              'round): validates --num_clients / --clients_per_round against the regime',
    'dropout_rate': 'probability that a sampled client drops out during the round (reports nothing)',
    'straggler_fraction': 'probability that a non-dropped client misses the deadline with part of its local steps',
    'straggler_policy': 'drop (discard stragglers) or partial (keep their finished local steps)',
    'availability': 'always, or diurnal (seeded time zones; each client available 8 of every 24 rounds)',
}


def define_flags() -> None:
  flag_groups.define_dataclass_flags(RegimeConfig, _HELP)


def fedprox_stragglers() -> bool:
  """True when the `stragglers` component owns participation (--straggler_model=fedprox with stragglers)."""
  model = FLAGS['straggler_model'].value if 'straggler_model' in FLAGS else 'per_client'
  return model == 'fedprox' and FLAGS.straggler_fraction > 0


def configure(exp) -> None:
  cfg = flag_groups.from_flags(RegimeConfig)
  participation = regimes.Participation(cfg.dropout_rate, cfg.straggler_fraction, cfg.straggler_policy,
                                        exp.loop_cfg.seed)
  regimes.check_regime(cfg.regime, len(exp.task.client_ids), exp.loop_cfg.clients_per_round)
  sampler = None
  if cfg.regime == 'cross_silo':
    if cfg.availability != 'always':
      raise ValueError(f'--availability=always is required with --regime=cross_silo; got {cfg.availability}.')
    sampler = regimes.FullParticipationSampler(exp.task.client_ids)
  elif cfg.availability != 'always':
    sampler = regimes.AvailabilitySampler(exp.task.client_ids, exp.loop_cfg.clients_per_round,
                                          exp.loop_cfg.seed, cfg.availability)
  if sampler is not None:
    flag = '--regime=cross_silo' if cfg.regime == 'cross_silo' else f'--availability={cfg.availability}'
    exp.set_sampler(sampler, flag)
    exp.hooks.append(regimes.AvailabilityHook(sampler))
  if (cfg.dropout_rate > 0 or cfg.straggler_fraction > 0) and not fedprox_stragglers():
    regime = regimes.RegimeParticipation(exp.task, exp.loop_cfg, participation)
    exp.set_participation(regime, '--dropout_rate/--straggler_fraction')
    exp.hooks.append(regimes.RegimeHook(regime))
