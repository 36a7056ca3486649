"""Component: client preprocessing and augmentation, run on the clients inside the federated computation.

  --client_preprocess=normalize(client),take(20)     see tff_fl/data/augment_spec.py for the items
  --augment=flip,brightness(0.2),crop(2)             training data only; seeded per client, round and example

When either is set, the process built for the algorithm is composed with the dataset computation of
`tff_fl.data.preprocess` (as `tff.simulation.compose_dataset_computation_with_learning_process`), and the round's
client inputs become (client_id, round_num) pairs: each client builds, shuffles (per epoch), augments, normalises and
batches its own data. Evaluation is never augmented; with normalize it uses the client's own normalisation. Needs
a `tff.learning.templates.LearningProcess` and no other component's client inputs; put it last in COMPONENTS (it
composes around the processes the others build).
"""

from absl import flags

from experiments import flag_groups
from tff_fl.data import augment_spec
from tff_fl.data import preprocess

FLAGS = flags.FLAGS


def define_flags() -> None:
  flag_groups.define_flag('string', 'client_preprocess', '', 'client-side preprocessing, comma-separated: '
                          + ', '.join(augment_spec.PREPROCESSING.values()) + " ('' = shuffle, repeat, batch only); "
                          'evaluation uses the same normalize (client statistics from its training data)')
  flag_groups.define_flag('string', 'augment', '', 'training-data augmentation on the clients, comma-separated: '
                          + ', '.join(augment_spec.AUGMENTATIONS.values()))


def configure(exp) -> None:
  if not (FLAGS.client_preprocess or FLAGS.augment):
    return
  cfg = exp.loop_cfg
  spec = preprocess.PreprocessSpec.from_flags(FLAGS.client_preprocess, FLAGS.augment,
                                              epochs=cfg.client_epochs_per_round, batch_size=cfg.client_batch_size,
                                              seed=cfg.seed)
  client_data = exp.task.data.train_client_data()
  spec.validate(client_data.element_type_structure)
  flag = 'augment' if FLAGS.augment else 'client_preprocess'
  if exp.client_inputs_fn is not None:
    raise ValueError(f'--{flag} builds client datasets on the clients and cannot be combined with a component that '
                     'sets its own client inputs (regimes dropout/stragglers, stateful algorithms, hierarchical).')
  exp.client_inputs_fn = preprocess.client_inputs
  if spec.normalize is not None:  # Evaluation sees the client's normalisation (never its augmentation).
    test_data = exp.task.data.test_client_data()
    exp.eval_dataset_fn = lambda cid: preprocess.normalized_eval_dataset(
        client_data.create_tf_dataset_for_client(cid), test_data.create_tf_dataset_for_client(cid), spec)
  exp.wrap_learning_process(lambda process: preprocess.compose(process, client_data, spec), f'--{flag}')
