"""Component: FedProx's straggler model (Li et al. 2020) for the `regimes` component's straggler flags.

`--straggler_model=fedprox` makes `--straggler_fraction` / `--straggler_policy` (defined by `regimes`) mean what
the FedProx paper does: exactly that fraction of each round's sampled clients straggle and finish a random number
of local epochs in [1, E); `drop` discards them (FedAvg), `partial` keeps their work (FedProx). This component then
owns the experiment's participation (`stragglers.FedProxStragglers`, with its own `regimes.RegimeHook` for the
regime/* columns) and `regimes` leaves it alone; the default `per_client` leaves participation to `regimes`.
"""

from absl import flags

from experiments import flag_groups
from tff_fl.simulation import regimes
from tff_fl.simulation import stragglers

STRAGGLER_MODELS = ('per_client', 'fedprox')
FLAGS = flags.FLAGS


def define_flags() -> None:
  flag_groups.define_flag('string', 'straggler_model', 'per_client',
                          'per_client (regimes: each client straggles independently) or fedprox (an exact fraction '
                          'of the cohort runs a random number of epochs in [1, E))')


def configure(exp) -> None:
  model = FLAGS.straggler_model
  if model not in STRAGGLER_MODELS:
    raise ValueError(f"--straggler_model must be one of {', '.join(STRAGGLER_MODELS)}; got '{model}'.")
  if model == 'per_client' or FLAGS.straggler_fraction == 0:
    return
  if FLAGS.dropout_rate > 0:
    raise ValueError(f'--straggler_model=fedprox does not model dropouts; set --dropout_rate=0, got '
                     f'{FLAGS.dropout_rate}.')
  participation = stragglers.FedProxStragglers(exp.task, exp.loop_cfg, FLAGS.straggler_fraction,
                                               FLAGS.straggler_policy)
  exp.set_participation(participation, '--straggler_model=fedprox')
  exp.hooks.append(regimes.RegimeHook(participation))
