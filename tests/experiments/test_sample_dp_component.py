"""`--sample_dp` (component `privacy`) really runs DP-SGD on the engine for every algorithm (FedAvg, SCAFFOLD): with
noise the trained weights differ from the same run without the flag; with no noise and a huge clip they are equal.
(Before the engine, `--sample_dp` with the fast engine, pruning or top-k EF trained without DP-SGD yet reported an
example-level epsilon.)"""

import numpy as np
import pytest
from absl import flags
import tensorflow_federated as tff

from experiments import experiment as experiment_lib
from experiments import train  # pylint: disable=unused-import  (defines the binary's flags and components)
from experiments.components import privacy
from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import builders
from tff_fl.algorithms import dp_sgd_client
from tff_fl.simulation import privacy_hooks as hooks
from tff_fl.simulation import training_loop

FLAGS = flags.FLAGS
NUM_CLIENTS, COHORT, ROUNDS = 4, 3, 2


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(task='synthetic', model='logreg', num_clients=NUM_CLIENTS))


@pytest.fixture
def parse():
  def parse_flags(*args):
    FLAGS.unparse_flags()
    FLAGS(['train', f'--num_clients={NUM_CLIENTS}', f'--clients_per_round={COHORT}', *args])
  yield parse_flags
  FLAGS.unparse_flags()


def _experiment(task, tmp_path, algorithm):
  sgd = tff.learning.optimizers.build_sgdm
  exp = experiment_lib.Experiment(
      task, tasks.TaskConfig(task='synthetic', num_clients=NUM_CLIENTS),
      builders.AlgorithmConfig(algorithm=algorithm, client_weighting='uniform'),
      training_loop.LoopConfig(total_rounds=ROUNDS, clients_per_round=COHORT, client_batch_size=10), sgd(0.1),
      sgd(1.0), str(tmp_path))
  privacy.configure(exp)
  return exp


def _trained(task, tmp_path, parse, algorithm, *args):
  parse(*args)
  exp = _experiment(task, tmp_path, algorithm)
  process = exp.build_process()  # The binary's path: registry -> Experiment.build_process -> engine.
  state = process.set_model_weights(process.initialize(), task.initial_weights(0))
  for r in range(1, ROUNDS + 1):
    state = process.next(state, engine.Cohort.full(r, task.client_ids[:COHORT])).state
  return exp, [np.asarray(w) for w in process.get_model_weights(state).trainable]


@pytest.mark.parametrize('algorithm', ['fedavg', 'scaffold'])
def test_sample_dp_runs_dp_sgd_on_the_engine(task, tmp_path, parse, algorithm):
  plain_exp, plain = _trained(task, tmp_path, parse, algorithm)
  noisy_exp, noisy = _trained(task, tmp_path, parse, algorithm, '--sample_dp', '--sample_noise_multiplier=1.0',
                              '--sample_clip_norm=1.0')
  _, clean = _trained(task, tmp_path, parse, algorithm, '--sample_dp', '--sample_noise_multiplier=0',
                      '--sample_clip_norm=1e6')
  assert not plain_exp.extensions
  assert [type(e) for e in noisy_exp.extensions] == [dp_sgd_client.SampleDP]
  assert noisy_exp.extensions[0].dp.noise_multiplier == 1.0 and noisy_exp.extensions[0].dp.l2_norm_clip == 1.0
  assert any(isinstance(h, hooks.PrivacyHook) for h in noisy_exp.hooks)  # It reports example_epsilon.
  assert max(np.max(np.abs(a - b)) for a, b in zip(noisy, plain)) > 1e-2  # DP-SGD's noise is in the weights.
  for a, b in zip(clean, plain):  # No noise, no clipping: DP-SGD's gradient is the plain gradient.
    np.testing.assert_allclose(a, b, atol=2e-5)
  assert max(np.max(np.abs(a - w)) for a, w in zip(plain, task.initial_weights(0).trainable)) > 1e-2


@pytest.mark.parametrize('args, match', [
    (['--sample_dp', '--sample_clip_norm=0'], '^--sample_clip_norm must be > 0; got 0.0.$'),
    (['--sample_dp', '--sample_noise_multiplier=-1'], '^--sample_noise_multiplier must be >= 0; got -1.0.$'),
])
def test_bad_sample_dp_flags_are_one_line_errors(task, tmp_path, parse, args, match):
  parse(*args)
  with pytest.raises(ValueError, match=match):
    _experiment(task, tmp_path, 'fedavg')
