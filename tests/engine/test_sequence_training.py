"""Next-token tasks (Shakespeare's shape: x, y int64 [n, L], pad id 0, `char_lstm`) train on the engine: FedAvg
equals stock TFF's `build_weighted_fed_avg` on the same batches, and the training loop runs and evaluates them
(generated data; the real plays are not needed)."""

import csv

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl.algorithms import fed_avg
from tff_fl.engine import evaluation
from tff_fl.simulation import training_loop

from eval_reference import assert_sums_close, initial_weights, per_client_reference, token_task

BATCH, LR, ROUNDS = 2, 0.5, 2


@pytest.fixture(scope='module')
def setup():
  task = token_task(train_snippets=(2, 4, 3), test_snippets=(1, 2, 1))
  process = engine.build_task_process(fed_avg.FedAvg(), task, epochs=1, batch_size=BATCH, seed=0,
                                      client_optimizer=tff.learning.optimizers.build_sgdm(LR), num_slots=2)
  return task, process, initial_weights(task)


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))


def test_engine_fed_avg_equals_stock_tff(setup):
  task, process, w0 = setup
  assert task.data.train['role1'][1].shape[1:] == (5,)  # Labels are sequences: the packer keeps [C, n, L].
  state = process.set_model_weights(process.initialize(), w0)
  stock = tff.learning.algorithms.build_weighted_fed_avg(task.model_fn, tff.learning.optimizers.build_sgdm(LR))
  stock_state = stock.set_model_weights(stock.initialize(), w0)
  for r in range(1, ROUNDS + 1):
    out = process.next(state, engine.Cohort.full(r, task.client_ids))
    state = out.state
    data = [task.train_dataset(c, epochs=1, batch_size=BATCH, seed=0, round_num=r) for c in task.client_ids]
    stock_out = stock.next(stock_state, data)
    stock_state = stock_out.state
    ours_train = out.metrics['client_work']['train']
    stock_train = stock_out.metrics['client_work']['train']
    assert ours_train['num_tokens'] == stock_train['num_tokens']  # Pads excluded from both.
    np.testing.assert_allclose(ours_train['masked_accuracy'], stock_train['masked_accuracy'], rtol=1e-5)
  ours, theirs = process.get_model_weights(state).trainable, stock.get_model_weights(stock_state).trainable
  assert _max_diff(ours, theirs) < 1e-5
  assert _max_diff(ours, w0.trainable) > 1e-3  # Training moved the model.


def test_training_loop_trains_and_evaluates_next_token_task(setup, tmp_path):
  task, process, _ = setup
  cfg = training_loop.LoopConfig(total_rounds=ROUNDS, clients_per_round=3, client_batch_size=BATCH)
  released = {}

  class Keep(training_loop.RoundHook):
    def on_train_end(self, process, state, summary):
      released['weights'] = process.get_model_weights(state)

  summary = training_loop.run_training(process, task, cfg, str(tmp_path), {'task': 'tokens'}, hooks=[Keep()],
                                       log=lambda _: None)
  with open(tmp_path / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [int(r['round']) for r in rows] == [1, 2] and all(r['train_accuracy'] for r in rows)
  # The loop's evaluation is the per-client path on the released model (pads excluded).
  weights = released['weights']
  want = per_client_reference(task.model_fn, weights, task.data.test, task.client_ids, pad_id=task.pad_id)
  assert_sums_close(evaluation.task_evaluator(task)(weights), want)
  np.testing.assert_allclose(summary['eval_accuracy'], sum(r['correct'] for r in want) /
                             sum(r['num_predictions'] for r in want), rtol=1e-6)
  assert set(summary['per_client_accuracy']) == set(task.client_ids)
