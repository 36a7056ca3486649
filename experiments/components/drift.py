"""Component: client-drift diagnostics (why did the loss go up?).

  --drift_metrics               per round: client update norms (mean, max), aggregated update norm, cosine of each
                                update to the aggregate (mean, min) [aggregator/drift/*]; FedProx gradient
                                dissimilarity, client loss spread at the broadcast model [drift/*]; drift/loss_change
  --drift_warning_threshold=X   a train-loss rise above X logs a warning naming the likely cause

Wraps `exp.model_aggregator` (after aggregation/privacy components have set it) and the built process. Needs a
`tff.learning` LearningProcess; put it before `preprocessing` in COMPONENTS.
"""

from absl import flags

from experiments import flag_groups
from tff_fl.algorithms import drift

FLAGS = flags.FLAGS


def define_flags() -> None:
  flag_groups.define_flag('bool', 'drift_metrics', False, 'report client-drift diagnostics each round (norms, '
                          'cosines, gradient dissimilarity, client loss spread)')
  flag_groups.define_flag('float', 'drift_warning_threshold', 0.1, 'with --drift_metrics: warn when the train loss '
                          'rises by more than this from one round to the next')


def configure(exp) -> None:
  if not FLAGS.drift_metrics:
    return
  hook = drift.DriftHook(FLAGS.drift_warning_threshold)  # Validates the threshold.
  exp.model_aggregator = drift.DriftMeasurementFactory(exp.model_aggregator)
  exp.hooks.append(hook)
  exp.wrap_learning_process(lambda process: drift.with_client_gradients(process, exp.task.model_fn),
                            '--drift_metrics')
