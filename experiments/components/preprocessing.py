"""Component: client preprocessing and augmentation, an extension of the round (any algorithm).

  --client_preprocess=normalize(client),take(20)     see tff_fl/data/augment_spec.py for the items
  --augment=flip,brightness(0.2),crop(2)             training data only; seeded per client, round and example

Adds `tff_fl.algorithms.preprocessing.ClientPreprocessing` to `exp.extensions`: each client's packed examples are
reordered / cut (shuffle, take), augmented and normalised inside the round. Evaluation is never augmented; with
normalize it uses the client's own normalisation (`exp.eval_arrays`).
"""

from absl import flags

from experiments import flag_groups
from tff_fl.algorithms import preprocessing
from tff_fl.data import augment_spec
from tff_fl.data import preprocess

FLAGS = flags.FLAGS


def define_flags() -> None:
  flag_groups.define_flag('string', 'client_preprocess', '', 'client-side preprocessing, comma-separated: '
                          + ', '.join(augment_spec.PREPROCESSING.values()) + " ('' = the task's shuffled epochs); "
                          'evaluation uses the same normalize (client statistics from its training data)')
  flag_groups.define_flag('string', 'augment', '', 'training-data augmentation on the clients, comma-separated: '
                          + ', '.join(augment_spec.AUGMENTATIONS.values()))


def configure(exp) -> None:
  spec = preprocess.PreprocessSpec.from_flags(FLAGS.client_preprocess, FLAGS.augment)
  if not spec.active:
    return
  cfg = exp.loop_cfg
  ext = preprocessing.ClientPreprocessing(spec, exp.task.data.train, seed=cfg.seed,
                                          epochs=cfg.client_epochs_per_round, batch_size=cfg.client_batch_size)
  exp.add_extension(ext, ' '.join(f'--{name}={FLAGS[name].value}' for name in ('client_preprocess', 'augment')
                                   if FLAGS[name].value))
  eval_arrays = ext.eval_arrays(exp.task.data.test)
  if eval_arrays is not None:
    exp.set_eval_arrays(eval_arrays, f'--client_preprocess={FLAGS.client_preprocess}')
