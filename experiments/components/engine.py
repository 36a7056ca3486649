"""`--engine=packed|tff`: what runs the experiment's rounds.

`packed` (default): the one engine (`tff_fl.engine`): the cohort packed into `--engine_slots` CLIENTS slots, each
trained in one TF call; every algorithm and component runs on it. `tff`: the stock `tff.learning` process of the
same definition (`tff_fl.algorithms.stock`) on TFF's own runtime with one `tf.data` dataset per client — the
reference the packed engine is compared against; it runs stateless algorithms without extensions (fedavg, fedprox,
fedsgd, fednova) and anything else is refused before training.

`--client_axis=auto|true|false` (packed engine): run a slot's clients together on a client axis (stacked weights,
batched forward and backward passes; `tff_fl.engine.slot_training`), whenever the model, algorithm and components
allow it (auto: the log says which and why), as a requirement (true: refused with the reason otherwise), or one
client at a time (false). Results agree to float rounding either way.
"""

from absl import flags

from experiments import experiment as experiment_lib
from experiments import flag_groups

FLAGS = flags.FLAGS
CLIENT_AXIS = {'auto': None, 'true': True, 'false': False}  # --client_axis -> build_process(client_axis=...).


def define_flags() -> None:
  flag_groups.define_flag('string', 'engine', 'packed', 'packed (every algorithm and component; clients packed as '
                          'tensors, one TF call per slot) or tff (stock TFF runtime on tf.data, for fedavg, fedprox, '
                          'fedsgd and fednova without extensions: the reference)')
  flag_groups.define_flag('integer', 'engine_slots', 1, '--engine=packed: CLIENTS slots the cohort is split into '
                          '(one per worker with --workers)')
  flag_groups.define_flag('string', 'client_axis', 'auto', "--engine=packed: run a slot's clients together on a "
                          'client axis: auto (whenever the model, algorithm and components allow it), true (required) '
                          'or false (one client at a time)')


def configure(exp) -> None:
  if FLAGS.engine not in experiment_lib.ENGINES:
    raise ValueError(f"--engine must be one of {', '.join(experiment_lib.ENGINES)}; got '{FLAGS.engine}'.")
  if FLAGS.engine_slots < 1:
    raise ValueError(f'--engine_slots must be >= 1; got {FLAGS.engine_slots}.')
  if FLAGS.engine == 'tff' and FLAGS.engine_slots != 1:
    raise ValueError(f'--engine_slots applies to --engine=packed; got --engine=tff --engine_slots={FLAGS.engine_slots}.')
  if FLAGS.client_axis not in CLIENT_AXIS:
    raise ValueError(f"--client_axis must be one of {', '.join(CLIENT_AXIS)}; got '{FLAGS.client_axis}'.")
  if FLAGS.engine == 'tff' and FLAGS.client_axis != 'auto':
    raise ValueError(f'--client_axis applies to --engine=packed; got --engine=tff --client_axis={FLAGS.client_axis}.')
  exp.engine, exp.engine_slots = FLAGS.engine, FLAGS.engine_slots
  exp.client_axis = CLIENT_AXIS[FLAGS.client_axis]
