"""Personal and fine-tuned per-client accuracies on the engine: FedPer's heads and Ditto's personal models read from
the engine's client states (against Keras models with those weights), the global model for algorithms without a
personal model, and fine-tuning from the global model against Keras SGD in `Task.train_order`."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import ditto
from tff_fl.algorithms import error_feedback
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import fedper
from tff_fl.data import client_data
from tff_fl.engine import evaluation
from tff_fl.models import keras_models

from eval_reference import initial_weights

HEAD = 2  # FedPer keeps the last Dense layer's kernel and bias per client.


def _small_task(seed=0) -> tasks.Task:
  """Three non-IID clients of 5-feature data, a 5-4-4-3 MLP (uncompiled Keras)."""

  @dataclasses.dataclass
  class SmallTask(tasks.Task):
    def keras_model(self):
      return keras_models.mlp_2nn([5], 3, hidden_units=4)

  rng = np.random.default_rng(seed)
  arrays = {f'c{i}': ((rng.normal(size=(n, 5)) + i).astype(np.float32), np.full(n, i % 3, np.int32))
            for i, n in enumerate((8, 11, 6))}
  test = {c: (x + rng.normal(size=x.shape).astype(np.float32), y) for c, (x, y) in arrays.items()}
  return SmallTask('small', client_data.FederatedArrays(list(arrays), arrays, test, 3), '2nn', (5,), 3)


def _keras_accuracy(task, trainable, cid):
  model = task.keras_model()
  model.set_weights([np.asarray(w) for w in trainable])
  x, y = task.data.test[cid]
  return float(np.mean(np.argmax(model.predict(x, verbose=0), 1) == y))


def _sgd(lr=0.3):
  return tff.learning.optimizers.build_sgdm(learning_rate=lr)


def _expected_personal(algorithm, weights, state):
  """The trainable weights a client deploys, from its numpy state (the global model before it first trains)."""
  if not state['initialized']:
    return list(weights.trainable)
  if isinstance(algorithm, fedper.FedPer):
    return list(weights.trainable[:-HEAD]) + list(state['head'])
  return list(state['personal'])


@pytest.mark.parametrize('algorithm', [fedper.FedPer(HEAD), ditto.Ditto(0.1)], ids=['fedper', 'ditto'])
def test_personal_accuracies_use_each_clients_own_model(algorithm):
  task = _small_task()
  process = engine.build_task_process(algorithm, task, epochs=1, batch_size=4, seed=0, client_optimizer=_sgd(),
                                      num_slots=2)
  state = process.set_model_weights(process.initialize(), initial_weights(task))
  for r in (1, 2):  # c0 and c1 return with their own models; c2 never trains: it keeps the initial state.
    state = process.next(state, engine.Cohort.full(r, ['c0', 'c1'])).state
  weights = process.get_model_weights(state)
  got = evaluation.personal_accuracies(process, state, task)
  for cid, vector in zip(task.client_ids, process.client_states(task.client_ids)):
    client_state = process.client_state_structure(vector)
    assert bool(client_state['initialized']) == (cid != 'c2')
    own = _expected_personal(algorithm, weights, client_state)
    if cid != 'c2':
      assert max(np.max(np.abs(a - b)) for a, b in zip(own, weights.trainable)) > 1e-3  # Not the global model.
    assert got[cid] == pytest.approx(_keras_accuracy(task, own, cid))
  assert got != evaluation.client_accuracies(task, weights)  # Own models change some client's accuracy.
  # Chunked calls (one client's state per call) give the same.
  assert evaluation.personal_accuracies(process, state, task, max_state_bytes=1) == got


def test_personal_accuracies_without_personal_model_are_the_global_ones():
  task = _small_task()  # Top-k EF keeps client state but deploys the inner FedAvg's global model.
  process = engine.build_task_process(error_feedback.TopKErrorFeedback(fed_avg.FedAvg(), 0.5), task, epochs=1,
                                      batch_size=4, seed=0, client_optimizer=_sgd())
  assert process.stateful
  state = process.set_model_weights(process.initialize(), initial_weights(task))
  weights = process.get_model_weights(state)
  assert evaluation.personal_accuracies(process, state, task) == evaluation.client_accuracies(task, weights)


def test_finetuned_accuracies_match_keras_fine_tuning():
  task = _small_task(seed=3)
  weights = initial_weights(task, seed=2)
  got = evaluation.finetuned_accuracies(task, weights, _sgd(), epochs=2, batch_size=4, seed=5)
  for cid in task.client_ids:
    model = task.keras_model()
    model.set_weights([np.asarray(w) for w in weights.trainable])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = task.data.train[cid]
    order = task.train_order(cid, epochs=2, seed=5, round_num=0)
    for s in range(0, len(order), 4):
      model.train_on_batch(x[order[s:s + 4]], y[order[s:s + 4]])
    want = _keras_accuracy(task, model.get_weights(), cid)
    assert got[cid] == pytest.approx(want)
  assert got != evaluation.client_accuracies(task, weights)  # Fine-tuning changed some client's accuracy.
  chunked = evaluation.finetuned_accuracies(task, weights, _sgd(), epochs=2, batch_size=4, seed=5, max_train_bytes=1)
  assert chunked == pytest.approx(got)
  with pytest.raises(ValueError, match='epochs'):
    evaluation.finetuned_accuracies(task, weights, _sgd(), epochs=0, batch_size=4, seed=5)
