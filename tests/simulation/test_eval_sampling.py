"""Cohort and evaluation samples: seeded by (seed, round) only; `--eval_clients` evaluates exactly that sample."""

import numpy as np
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import fed_avg
from tff_fl.data import flat_arrays
from tff_fl.simulation import sampling
from tff_fl.simulation import training_loop

import train_binary  # tests/train_binary.py: the binary in this process


def test_eval_sample_is_a_seeded_sorted_subset():
  ids = flat_arrays.ClientIds(flat_arrays.client_id_array(100000))
  a = sampling.eval_sample(ids, 500, seed=3, round_num=7)
  assert len(set(a)) == 500 and a == sorted(a) and all(c in set(ids[:]) for c in a[:20])
  assert a == sampling.eval_sample(list(ids), 500, seed=3, round_num=7)  # A list or the numpy-backed ids.
  assert a != sampling.eval_sample(ids, 500, seed=3, round_num=8)
  assert a != sampling.eval_sample(ids, 500, seed=4, round_num=7)
  assert set(sampling.eval_sample(ids[:10], 10, seed=0, round_num=1)) == set(ids[:10])
  for bad in (0, 100001):
    try:
      sampling.eval_sample(ids, bad, seed=0, round_num=1)
      assert False, bad
    except ValueError as e:
      assert 'eval_clients' in str(e)


class _Capture(training_loop.RoundHook):
  def on_train_end(self, process, state, summary):
    self.weights = process.get_model_weights(state)


def test_loop_evaluates_the_seeded_sample(tmp_path):
  task = tasks.build_task(tasks.TaskConfig(task='digits_population', num_clients=3000, examples_per_client=5, seed=1))
  process = engine.build_task_process(fed_avg.FedAvg(), task, epochs=1, batch_size=5, seed=0,
                                      client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=0.1))
  cfg = training_loop.LoopConfig(total_rounds=2, clients_per_round=30, client_batch_size=5, eval_clients=40)
  hook = _Capture()
  summary = training_loop.run_training(process, task, cfg, str(tmp_path), {}, hooks=[hook], log=lambda s: None)
  assert summary['eval_sampled_clients'] == 40 and summary['eval_population'] == 3000
  ids = sampling.eval_sample(task.client_ids, 40, 0, 2)
  assert sorted(summary['per_client_accuracy']) == ids
  model = task.keras_model()  # Reference: Keras on the sampled clients' test rows.
  model.set_weights([np.asarray(w) for w in hook.weights.trainable])
  x = np.concatenate([task.data.test[c][0] for c in ids])
  y = np.concatenate([task.data.test[c][1] for c in ids])
  accuracy = float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))
  np.testing.assert_allclose(summary['eval_accuracy'], accuracy, atol=1e-6)


def test_binary_refuses_more_eval_clients_than_clients(tmp_path):
  result = train_binary.run(f'--root_output_dir={tmp_path}', '--task=digits_population', '--num_clients=30',
                            '--clients_per_round=3', '--total_rounds=1', '--eval_clients=31')
  assert result.returncode != 0
  assert '--eval_clients must be <= --num_clients (30); got 31.' in result.stderr + result.stdout
