"""`--engine=packed|tff`: what runs the experiment's rounds.

`packed` (default): the one engine (`tff_fl.engine`): the cohort packed into `--engine_slots` CLIENTS slots, each
trained in one TF call; every algorithm and component runs on it. `tff`: the stock `tff.learning` process of the
same definition (`tff_fl.algorithms.stock`) on TFF's own runtime with one `tf.data` dataset per client — the
reference the packed engine is compared against; it runs stateless algorithms without extensions (fedavg, fedprox,
fedsgd, fednova) and anything else is refused before training.
"""

from absl import flags

from experiments import experiment as experiment_lib
from experiments import flag_groups

FLAGS = flags.FLAGS


def define_flags() -> None:
  flag_groups.define_flag('string', 'engine', 'packed', 'packed (every algorithm and component; clients packed as '
                          'tensors, one TF call per slot) or tff (stock TFF runtime on tf.data, for fedavg, fedprox, '
                          'fedsgd and fednova without extensions: the reference)')
  flag_groups.define_flag('integer', 'engine_slots', 1, '--engine=packed: CLIENTS slots the cohort is split into '
                          '(one per worker with --workers)')


def configure(exp) -> None:
  if FLAGS.engine not in experiment_lib.ENGINES:
    raise ValueError(f"--engine must be one of {', '.join(experiment_lib.ENGINES)}; got '{FLAGS.engine}'.")
  if FLAGS.engine_slots < 1:
    raise ValueError(f'--engine_slots must be >= 1; got {FLAGS.engine_slots}.')
  if FLAGS.engine == 'tff' and FLAGS.engine_slots != 1:
    raise ValueError(f'--engine_slots applies to --engine=packed; got --engine=tff --engine_slots={FLAGS.engine_slots}.')
  exp.engine, exp.engine_slots = FLAGS.engine, FLAGS.engine_slots
