"""Component: client-drift diagnostics (why did the loss go up?), an extension of the round (any algorithm).

  --drift_metrics               per round, under drift/*: client update norms (mean, max), aggregated update norm,
                                cosine of each update to the aggregate (mean, min), FedProx gradient dissimilarity
                                and client loss spread at the broadcast model, and drift/loss_change
  --drift_warning_threshold=X   a train-loss rise above X logs a warning naming the likely cause

Adds `tff_fl.algorithms.drift.DriftMeasurements` to `exp.extensions` and `tff_fl.simulation.drift_hook.DriftHook`
to the hooks. Its figures compare each
update with the round's aggregate (the engine's aggregate pass: a second map over the clients, which `--workers`
still splits).
"""

from absl import flags

from experiments import flag_groups
from tff_fl.algorithms import drift
from tff_fl.simulation import drift_hook

FLAGS = flags.FLAGS


def define_flags() -> None:
  flag_groups.define_flag('bool', 'drift_metrics', False, 'report client-drift diagnostics each round (norms, '
                          'cosines, gradient dissimilarity, client loss spread)')
  flag_groups.define_flag('float', 'drift_warning_threshold', 0.1, 'with --drift_metrics: warn when the train loss '
                          'rises by more than this from one round to the next')


def configure(exp) -> None:
  if not FLAGS.drift_metrics:
    return
  if FLAGS.drift_warning_threshold < 0:
    raise ValueError(f'--drift_warning_threshold must be >= 0; got {FLAGS.drift_warning_threshold}.')
  exp.hooks.append(drift_hook.DriftHook(FLAGS.drift_warning_threshold))
  exp.add_extension(drift.DriftMeasurements(), '--drift_metrics')
