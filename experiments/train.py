"""Federated training binary: parse flags ► build task ► build process ► run the one training loop.

  python -m experiments.train --task=digits --algorithm=fedavg --total_rounds=50 --experiment_name=demo
  python -m experiments.train --flagfile=experiments/configs/default.flags

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

from experiments import components
from experiments import experiment as experiment_lib
from experiments import flag_groups
from tff_fl import tasks as tasks_lib
from tff_fl.algorithms import builders
from tff_fl.simulation import contexts
from tff_fl.simulation import outputs as outputs_lib
from tff_fl.simulation import training_loop

FLAGS = flags.FLAGS

_TASK_HELP = {
    'task': f"task: {', '.join(tasks_lib.TASK_BUILDERS)}",
    'model': 'model: logreg, 2nn, cnn (cnn needs image data), char_lstm (shakespeare)',
    'num_clients': 'number of simulated clients (synthetic: devices)',
    'partition': 'how examples are split over clients: iid, dirichlet, shards, natural (shakespeare, emnist: natural)',
    'dirichlet_alpha': 'Dirichlet concentration for --partition=dirichlet (smaller = more label skew)',
    'shards_per_client': 'shards per client for --partition=shards (McMahan et al.)',
    'test_fraction': "fraction of each client's examples held out for per-client evaluation (mnist/fashion_mnist "
                     'deal the official test set instead)',
    'synthetic_alpha': 'FedProx Synthetic(alpha, beta): model heterogeneity',
    'synthetic_beta': 'FedProx Synthetic(alpha, beta): feature heterogeneity',
    'synthetic_iid': 'FedProx Synthetic-IID instead of Synthetic(alpha, beta)',
    'seed': 'seed of data split, initial model, cohort sampling and shuffling',
}
_ALGO_HELP = {
    'algorithm': 'algorithm: fedavg, fedprox, fedsgd, fednova, scaffold, feddyn, fedper, ditto',
    'mu': 'FedProx proximal coefficient (--algorithm=fedprox)',
    'client_weighting': 'weight of a client update: num_examples or uniform',
}
_LOOP_HELP = {
    'total_rounds': 'rounds to train (re-running with more rounds continues from the checkpoint)',
    'clients_per_round': 'cohort size, sampled uniformly without replacement each round',
    'client_epochs_per_round': 'local epochs per round (E)',
    'client_batch_size': 'local batch size (B)',
    'rounds_per_eval': 'evaluate every this many rounds (and at the last round)',
    'rounds_per_checkpoint': 'checkpoint every this many rounds (and at the last round)',
}

flag_groups.define_dataclass_flags(tasks_lib.TaskConfig, _TASK_HELP)
flag_groups.define_dataclass_flags(builders.AlgorithmConfig, _ALGO_HELP)
flag_groups.define_optimizer_flags('client', 'sgd', 0.1)
flag_groups.define_optimizer_flags('server', 'sgd', 1.0)
flag_groups.define_dataclass_flags(training_loop.LoopConfig, _LOOP_HELP)
flag_groups.define_flag('string', 'root_output_dir', '/tmp/tff_fl', 'root of experiment output directories')
flag_groups.define_flag('string', 'experiment_name', 'default', 'experiment directory under --root_output_dir')
_COMPONENTS = components.modules()
for _component in _COMPONENTS:
  _component.define_flags()

# Flags that do not change what the model sees; a checkpoint may be resumed with other values of these.
_RESUMABLE_FLAGS = ('total_rounds', 'rounds_per_eval', 'rounds_per_checkpoint', 'root_output_dir', 'experiment_name',
                    'workers')


def build_experiment() -> experiment_lib.Experiment:
  """Validates flags and builds the experiment (task, components, process); raises ValueError on bad input."""
  task_cfg = flag_groups.from_flags(tasks_lib.TaskConfig)
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
                                    eval_arrays=exp.eval_arrays, log=log)


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
    sys.stderr.write(f'error: {e}\n')
    sys.exit(2)
  finally:
    contexts.shutdown()


def run_main():
  app.run(main)


if __name__ == '__main__':
  run_main()
