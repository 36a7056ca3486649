"""FedPer against plain Keras SGD: each client's head persists in its state, the base is averaged; fine-tuning
evaluation against Keras fine-tuning; personalized evaluation uses each client's own head."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import fedper
from tff_fl.models import keras_models

SPEC = collections.OrderedDict(x=tf.TensorSpec([5], tf.float32), y=tf.TensorSpec([], tf.int32))
BATCH, LR = 4, 0.3


def _keras():
  return keras_models.mlp_2nn([5], 3, hidden_units=4)


MODEL_FN = keras_models.build_tff_model_fn(_keras, SPEC)
HEAD = fedper.head_size_from_layers(_keras(), 1)  # Last Dense: kernel + bias.


def _arrays(seed=0):
  rng = np.random.default_rng(seed)
  return [((rng.normal(size=(n, 5)) + i).astype(np.float32), np.full(n, i % 3, np.int32))  # non-IID labels
          for i, n in enumerate((8, 11, 6))]


def _datasets(arrays, epochs=1):
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).repeat(epochs).batch(BATCH)
          for x, y in arrays]


def _keras_train(weights, x, y, epochs=1):
  """Plain Keras minibatch SGD in data order; returns the trained weights (list of arrays)."""
  model = _keras()
  model.set_weights([np.asarray(w) for w in weights])
  model.compile(optimizer=tf.keras.optimizers.SGD(LR),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  xs, ys = np.concatenate([x] * epochs), np.concatenate([y] * epochs)
  for s in range(0, len(xs), BATCH):
    model.train_on_batch(xs[s:s + BATCH], ys[s:s + BATCH])
  return model.get_weights()


def _sgd():
  return tff.learning.optimizers.build_sgdm(learning_rate=LR)


def test_head_stays_per_client_and_base_is_averaged():
  arrays = _arrays()
  datasets = _datasets(arrays)
  process = fedper.build_fedper(MODEL_FN, _sgd(), HEAD)
  state = process.initialize()
  server = [np.asarray(w) for w in process.get_model_weights(state).trainable]
  heads = {}
  states = {i: process.initial_client_state() for i in range(3)}
  for cohort in [(0, 1), (0, 2)]:  # Client 0 returns in round 2 with its own head.
    trained = {}
    for i in cohort:
      start = server[:-HEAD] + heads.get(i, server[-HEAD:])
      trained[i] = _keras_train(start, *arrays[i])
    state, new_states, _ = process.next(state, [datasets[i] for i in cohort], [states[i] for i in cohort])
    n = np.array([len(arrays[i][0]) for i in cohort], np.float64)
    for i, s in zip(cohort, new_states):
      states[i] = s
      heads[i] = trained[i][-HEAD:]
      for got, want in zip(s['head'], heads[i]):
        np.testing.assert_allclose(got, want, atol=1e-5)
      assert float(s['initialized']) == 1.0
    server = [sum(w * trained[i][k] for w, i in zip(n / n.sum(), cohort)) for k in range(len(server))]
    for got, want in zip(process.get_model_weights(state).trainable, server):
      np.testing.assert_allclose(got, want, atol=1e-5)
  # Personal heads differ between clients (non-IID labels) and from the server head.
  assert np.max(np.abs(heads[0][1] - heads[1][1])) > 1e-2
  assert np.max(np.abs(heads[0][1] - server[-1])) > 1e-2
  # Personalized eval: client 0 with its own head, client 1 too; never-seen client would use the server head.
  evaluate = fedper.build_personalized_eval(MODEL_FN, HEAD, process.client_state_type)
  results = evaluate(process.get_model_weights(state), [states[0], states[1]], datasets[:2])
  for i, r in enumerate(results):
    model = _keras()
    model.set_weights(server[:-HEAD] + heads[i])
    want = np.mean(np.argmax(model.predict(arrays[i][0], verbose=0), 1) == arrays[i][1])
    assert r['correct'] / r['num_predictions'] == pytest.approx(want)


def test_finetune_eval_matches_keras_fine_tuning():
  arrays = _arrays(seed=3)
  tf.keras.utils.set_random_seed(2)
  weights = _keras().get_weights()
  model_weights = tff.learning.models.ModelWeights(trainable=weights, non_trainable=[])
  evaluate = fedper.build_finetune_eval(MODEL_FN, _sgd())
  results = evaluate(model_weights, _datasets(arrays, epochs=2), _datasets(arrays))
  for (x, y), r in zip(arrays, results):
    model = _keras()
    model.set_weights(_keras_train(weights, x, y, epochs=2))
    logits = model.predict(x, verbose=0)
    assert r['correct'] == np.sum(np.argmax(logits, 1) == y)
    want_loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits).numpy()
    assert r['loss_sum'] / r['num_examples'] == pytest.approx(want_loss, rel=1e-4)


def test_head_layers_validation():
  with pytest.raises(ValueError, match='--fedper_head_layers'):
    fedper.head_size_from_layers(_keras(), 3)
  with pytest.raises(ValueError, match='head_size'):
    fedper.build_fedper(MODEL_FN, _sgd(), 6)
