"""Component: binary-level checks of the stateless algorithms fedsgd and fednova (registered in the library).

  --algorithm=fedsgd     FedSGD (McMahan et al. 2017): one mean gradient per client at the broadcast model, one
                         server step (`tff_fl.algorithms.fed_sgd.FedSGD`); the client optimizer is not used
  --algorithm=fednova    FedNova (Wang et al. 2020): normalized averaging; local SGD at --client_learning_rate, with
                         --client_momentum when --client_optimizer=momentum and --client_weight_decay
                         (`tff_fl.algorithms.fednova.FedNova`; NIID-Bench's a_i with rho = the momentum)

Both run on the engine with every extension (pruning, DP-SGD, attacks, ...) and as stock TFF with --engine=tff.
Both are in `tff_fl.algorithms.builders.ALGORITHMS`; `configure` refuses flag combinations FedNova cannot honour, and
a FedSGD client optimizer other than sgd (it would have no effect).
"""

from absl import flags

FLAGS = flags.FLAGS
FEDNOVA_OPTIMIZERS = ('sgd', 'momentum')
FEDNOVA_AGGREGATORS = ('mean', 'median', 'trimmed_mean', 'krum', 'multi_krum')  # Leave values unchanged.


def define_flags() -> None:
  """No flags of its own: FedNova reads the client optimizer flags."""


def configure(exp) -> None:
  if exp.algo_cfg.algorithm == 'fedsgd' and FLAGS.client_optimizer != 'sgd':
    raise ValueError(f'--algorithm=fedsgd takes one gradient per client and no local step, so '
                     f'--client_optimizer={FLAGS.client_optimizer} would have no effect; leave --client_optimizer=sgd.')
  if exp.algo_cfg.algorithm != 'fednova':
    return
  if FLAGS.client_optimizer not in FEDNOVA_OPTIMIZERS:
    raise ValueError(f'--algorithm=fednova needs --client_optimizer=sgd or momentum (its step normalization is '
                     f'for SGD with momentum); got --client_optimizer={FLAGS.client_optimizer}.')
  # FedNova's update carries its step count next to the normalized update: an aggregator stage that clips, zeroes,
  # quantizes, sparsifies or noises values would change the step count with it, which is not FedNova.
  stages = [part.split('(')[0].strip() for part in FLAGS.aggregator.split('>')]
  changed = [f'--aggregator={FLAGS.aggregator}'] if set(stages) - set(FEDNOVA_AGGREGATORS) else []
  changed += [f'--dp={FLAGS.dp}'] if FLAGS.dp != 'none' else []
  changed += [f'--compression={FLAGS.compression}'] if FLAGS.compression else []
  if changed:
    raise ValueError(f"--algorithm=fednova cannot be combined with {' '.join(changed)}: its step count travels with "
                     f"the update and would be changed too; use --aggregator={'|'.join(FEDNOVA_AGGREGATORS)}.")
