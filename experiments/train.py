"""Federated training binary: parse flags ► build task ► build process ► run the one training loop.

  python -m experiments.train --task=digits --algorithm=fedavg --total_rounds=50 --experiment_name=demo
  python -m experiments.train --flagfile=experiments/configs/default.flags
  python -m experiments.train --plugin=my_module --algorithm=my_algorithm --aggregator='my_stage(2)>mean'

`--plugin=module` (repeatable, on the command line) imports a user module first: whatever it registers (tasks,
models, algorithms, aggregator stages, components with their flags) is in --helpfull and in the allowed values.

Writes hparams.json, metrics.csv, summary.json, TensorBoard events and checkpoints to
<root_output_dir>/<experiment_name>/. Re-running the same command resumes from the newest checkpoint. Bad input ends
with one line naming the flag and what is allowed (exit code 2).
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from experiments import plugins

try:  # Before any flag is defined: plugins add registry entries, components and flags.
  _PLUGINS = plugins.load(plugins.from_argv(sys.argv))
except ValueError as _e:
  sys.stderr.write(f'error: {_e}\n')
  sys.exit(2)

# pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import components
from experiments import experiment as experiment_lib
from experiments import flag_groups
from tff_fl import tasks as tasks_lib
from tff_fl.algorithms import builders
from tff_fl.data import partition as partition_lib
from tff_fl.models import keras_models
from tff_fl.simulation import contexts
from tff_fl.simulation import outputs as outputs_lib
from tff_fl.simulation import training_loop
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def _task_defaults(field: str) -> str:
  """'logreg; shakespeare: char_lstm': the registered tasks' defaults of `field`, the most common one first."""
  values = [getattr(spec, field) for _, spec in tasks_lib.TASKS.items()]
  common = max(set(values), key=values.count)
  others = {}
  for name, spec in tasks_lib.TASKS.items():
    if getattr(spec, field) != common:
      others.setdefault(getattr(spec, field), []).append(name)
  return '; '.join([common] + [f"{', '.join(names)}: {value}" for value, names in others.items()])


_TASK_HELP = {
    'task': f"task: {', '.join(tasks_lib.TASKS.names())}",
    'model': (f"model: {', '.join(keras_models.MODELS.names())} (cnn needs image data, simple_cnn 28x28x1 images, "
              "char_lstm token sequences); "
              f"'' = the task's default ({_task_defaults('default_model')})"),
    'num_clients': 'number of simulated clients (synthetic: devices)',
    'examples_per_client': ('examples drawn with replacement per client by the *_population tasks (mnist_population, '
                            'digits_population)'),
    'partition': (f"how examples are split over clients: {', '.join(partition_lib.PARTITIONS)}; '' = the task's "
                  f"default ({_task_defaults('default_partition')})"),
    'dirichlet_alpha': ('Dirichlet concentration for --partition=dirichlet (smaller = more label skew); NIID-Bench\'s '
                        'beta for label_dirichlet and quantity_skew'),
    'shards_per_client': 'shards per client for --partition=shards (McMahan et al.)',
    'labels_per_client': "labels per client for --partition=label_quantity (NIID-Bench's #C=k)",
    'feature_noise': ("NIID-Bench's feature skew: client i of n gets Gaussian noise of std feature_noise * i / (n - 1) "
                      'on its training inputs (0 = off)'),
    'test_fraction': "fraction of each client's examples held out for per-client evaluation (mnist/fashion_mnist "
                     'deal the official test set instead)',
    'synthetic_alpha': 'FedProx Synthetic(alpha, beta): model heterogeneity',
    'synthetic_beta': 'FedProx Synthetic(alpha, beta): feature heterogeneity',
    'synthetic_iid': 'FedProx Synthetic-IID instead of Synthetic(alpha, beta)',
    'seed': 'seed of data split, initial model, cohort sampling and shuffling',
}
_ALGO_HELP = {
    'algorithm': f"algorithm: {', '.join(builders.ALGORITHMS.names())}",
    'mu': 'FedProx proximal coefficient (--algorithm=fedprox)',
    'client_weighting': 'weight of a client update: num_examples or uniform (with --dp the default is uniform)',
    'feddyn_alpha': 'FedDyn: weight alpha of the dynamic regulariser (> 0)',
    'ditto_lambda': "Ditto: weight lambda of the personal models' proximal term towards the global model (>= 0)",
    'fedper_head_layers': 'FedPer: number of final layers kept per client',
    'scaffold_correction': ("SCAFFOLD: gradient (Karimireddy et al.: plain SGD on g - c_i + c) or after_step "
                            "(NIID-Bench: the client optimizer's step, then w -= lr * (c - c_i))"),
}
_LOOP_HELP = {
    'total_rounds': 'rounds to train (re-running with more rounds continues from the checkpoint)',
    'clients_per_round': 'cohort size, sampled uniformly without replacement each round',
    'client_epochs_per_round': 'local epochs per round (E)',
    'client_batch_size': 'local batch size (B)',
    'rounds_per_eval': 'evaluate every this many rounds (and at the last round)',
    'eval_clients': ('evaluate a sample of this many clients per evaluation, seeded by (seed, round); 0 = every '
                     'client (metrics eval_sampled_clients, eval_population)'),
    'rounds_per_checkpoint': 'checkpoint every this many rounds (and at the last round)',
}

flag_groups.define_dataclass_flags(tasks_lib.TaskConfig, _TASK_HELP)
flag_groups.define_dataclass_flags(builders.AlgorithmConfig, _ALGO_HELP)
flag_groups.define_optimizer_flags('client', 'sgd', 0.1)
flag_groups.define_optimizer_flags('server', 'sgd', 1.0)
flag_groups.define_dataclass_flags(training_loop.LoopConfig, _LOOP_HELP)
flag_groups.define_flag('string', 'root_output_dir', '/tmp/tff_fl', 'root of experiment output directories')
flag_groups.define_flag('string', 'experiment_name', 'default', 'experiment directory under --root_output_dir')
flags.DEFINE_multi_string(plugins.FLAG, [], 'user module to import first (repeatable; on the command line): it may '
                          'register tasks, models, algorithms, aggregator stages and components with their flags')
_COMPONENTS = components.modules()
for _component in _COMPONENTS:
  _component.define_flags()

# Flags that do not change what the model sees; a checkpoint may be resumed with other values of these (--workers and
# --client_axis change how clients run, with results equal up to float rounding; a checkpoint written before
# --client_axis existed resumes too).
_RESUMABLE_FLAGS = ('total_rounds', 'rounds_per_eval', 'eval_clients', 'rounds_per_checkpoint', 'root_output_dir',
                    'experiment_name',
                    'workers', 'client_axis')


def build_experiment() -> experiment_lib.Experiment:
  """Validates flags and builds the experiment (task, components, process); raises ValueError on bad input, whose
  message names flags (library messages name Python arguments; `flag_groups.flag_message` rewords them)."""
  try:
    return _build_experiment()
  except ValueError as e:
    e.args = (flag_groups.flag_message(str(e)),) + e.args[1:]
    raise


def _resolve_flag_defaults(task_cfg: tasks_lib.TaskConfig) -> None:
  """Flags whose default depends on other flags: the task's model and partition, and each component's
  `flag_defaults()` (e.g. --dp picks --client_weighting=uniform). The resolved values become the flags' values, so
  hparams.json and the resume fingerprint record what runs."""
  FLAGS['model'].value, FLAGS['partition'].value = task_cfg.model, task_cfg.partition
  for component in _COMPONENTS:
    if hasattr(component, 'flag_defaults'):
      component.flag_defaults()


def _build_experiment() -> experiment_lib.Experiment:
  if list(FLAGS[plugins.FLAG].value) != [m.__name__ for m in _PLUGINS]:
    raise ValueError(f'--{plugins.FLAG} must be given on the command line (not in a --flagfile): its modules '
                     'are imported before flags are defined.')
  task_cfg = tasks_lib.resolve(flag_groups.from_flags(tasks_lib.TaskConfig))
  _resolve_flag_defaults(task_cfg)
  algo_cfg = flag_groups.from_flags(builders.AlgorithmConfig)
  loop_cfg = flag_groups.from_flags(training_loop.LoopConfig)
  algo_cfg.validate()
  loop_cfg.validate()
  client_opt = flag_groups.optimizer_from_flags('client')
  server_opt = flag_groups.optimizer_from_flags('server')
  if loop_cfg.clients_per_round > task_cfg.num_clients:
    raise ValueError(f'--clients_per_round must be <= --num_clients ({task_cfg.num_clients}); '
                     f'got {loop_cfg.clients_per_round}.')
  exp_dir = outputs_lib.prepare_output_dir(FLAGS.root_output_dir, FLAGS.experiment_name)
  exp = experiment_lib.Experiment(tasks_lib.build_task(task_cfg), task_cfg, algo_cfg, loop_cfg, client_opt,
                                  server_opt, exp_dir)
  for component in _COMPONENTS:
    component.configure(exp)
  exp.build_process()
  return exp


def train(exp: experiment_lib.Experiment, log=lambda line: print(line, flush=True)) -> dict:
  """Runs (or resumes) the one training loop on a built experiment; fingerprint = every flag not resumable."""
  hparams = flag_groups.hparams()
  fingerprint = {k: v for k, v in hparams.items() if k not in _RESUMABLE_FLAGS}
  return training_loop.run_training(exp.process, exp.task, exp.loop_cfg, exp.exp_dir, hparams,
                                    fingerprint=fingerprint, fingerprint_defaults=flag_groups.defaults(),
                                    sampler=exp.sampler, participation=exp.participation, hooks=exp.hooks,
                                    eval_arrays=exp.eval_arrays, release=exp.release, log=log)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)
  try:
    exp = build_experiment()
    print(f'Task {exp.task.name}: {len(exp.task.client_ids)} clients, model {exp.task.model_name}; '
          f'algorithm {FLAGS.algorithm}; output {exp.exp_dir}', flush=True)
    train(exp)
  except ValueError as e:
    sys.stderr.write(f'error: {flag_groups.flag_message(str(e))}\n')
    sys.exit(2)
  finally:
    contexts.shutdown()


def run_main():
  # The binary installs TFF's execution context (importing tff_fl does not), before flag parsing: even --helpfull
  # or a usage error then exits on it.
  contexts.set_local_cpp_context()
  app.run(main)


if __name__ == '__main__':
  run_main()
