"""Component: participation regimes (cross-device / cross-silo) for any algorithm.

Flags: --regime=custom|cross_device|cross_silo (checks population and cohort against the regime's definition),
--dropout_rate, --straggler_fraction, --straggler_policy=drop|partial, --availability=always|diurnal. Sets
`exp.sampler` (diurnal availability; full participation for cross_silo) and `exp.client_inputs_fn` (dropout and
stragglers), and adds the `regime/*` metrics.csv columns. Must come before `hierarchical` in COMPONENTS (that one
groups whatever inputs this produces by cluster).
"""

import dataclasses

from experiments import flag_groups
from tff_fl.simulation import regimes


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


def configure(exp) -> None:
  cfg = flag_groups.from_flags(RegimeConfig)
  participation = regimes.Participation(cfg.dropout_rate, cfg.straggler_fraction, cfg.straggler_policy,
                                        exp.loop_cfg.seed)
  regimes.check_regime(cfg.regime, len(exp.task.client_ids), exp.loop_cfg.clients_per_round)
  if cfg.regime == 'cross_silo':
    if cfg.availability != 'always':
      raise ValueError(f'--availability=always is required with --regime=cross_silo; got {cfg.availability}.')
    exp.sampler = regimes.FullParticipationSampler(exp.task.client_ids)
  elif cfg.availability != 'always':
    exp.sampler = regimes.AvailabilitySampler(exp.task.client_ids, exp.loop_cfg.clients_per_round,
                                              exp.loop_cfg.seed, cfg.availability)
  inputs = None
  if cfg.dropout_rate > 0 or cfg.straggler_fraction > 0:
    inputs = regimes.RegimeInputs(exp.task, exp.loop_cfg, participation)
    exp.client_inputs_fn = inputs
  if exp.sampler is not None or inputs is not None:
    exp.hooks.append(regimes.RegimeHook(exp.sampler, inputs))
