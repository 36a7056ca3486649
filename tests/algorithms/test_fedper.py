"""FedPer on the engine against plain Keras SGD: each client's head persists in its state, the base is averaged;
`personal_weights` is (server base, own head)."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl.algorithms import fedper
from tff_fl.models import keras_models

from test_scaffold import build

SPEC = collections.OrderedDict(x=tf.TensorSpec([5], tf.float32), y=tf.TensorSpec([], tf.int32))
BATCH, LR = 4, 0.3
NUM_EXAMPLES = tff.learning.ClientWeighting.NUM_EXAMPLES


def _keras():
  return keras_models.mlp_2nn([5], 3, hidden_units=4)


MODEL_FN = keras_models.build_tff_model_fn(_keras, SPEC)
HEAD = fedper.head_size_from_layers(_keras(), 1)  # Last Dense: kernel + bias.


def _arrays(seed=0):
  rng = np.random.default_rng(seed)
  return [((rng.normal(size=(n, 5)) + i).astype(np.float32), np.full(n, i % 3, np.int32))  # non-IID labels
          for i, n in enumerate((8, 11, 6))]


def _keras_train(weights, x, y):
  """Plain Keras minibatch SGD in data order; returns the trained weights (list of arrays)."""
  model = _keras()
  model.set_weights([np.asarray(w) for w in weights])
  model.compile(optimizer=tf.keras.optimizers.SGD(LR),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  for s in range(0, len(x), BATCH):
    model.train_on_batch(x[s:s + BATCH], y[s:s + BATCH])
  return model.get_weights()


def _build(arrays, head=HEAD, **kwargs):
  return build(fedper.FedPer(head), arrays, model_fn=MODEL_FN, client_lr=LR, weighting=NUM_EXAMPLES,
               batch_size=BATCH, **kwargs)


def test_head_stays_per_client_and_base_is_averaged():
  arrays = _arrays()
  process = _build(arrays, num_slots=2)
  state = process.initialize()
  server = [np.asarray(w) for w in process.get_model_weights(state).trainable]
  heads = {}
  for r, cohort in enumerate([(0, 1), (0, 2)], start=1):  # Client 0 returns in round 2 with its own head.
    trained = {}
    for i in cohort:
      start = server[:-HEAD] + heads.get(i, server[-HEAD:])
      trained[i] = _keras_train(start, *arrays[i])
    state = process.next(state, engine.Cohort.full(r, [str(i) for i in cohort])).state
    n = np.array([len(arrays[i][0]) for i in cohort], np.float64)
    for i in cohort:
      s = process.client_state_structure(process.client_states([str(i)])[0])
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
  # The deployed model: server base + own head; a client never seen deploys the server model.
  weights = tf.nest.map_structure(tf.constant, process.get_model_weights(state))
  algorithm = process.parts.algorithm
  for cid, want in (('0', server[:-HEAD] + heads[0]), ('unseen', server)):
    s = tf.nest.map_structure(tf.constant, process.client_state_structure(process.client_states([cid])[0]))
    for got, w in zip(algorithm.personal_weights(weights, s).trainable, want):
      np.testing.assert_allclose(got, w, atol=1e-6)


def test_head_validation():
  with pytest.raises(ValueError, match=r'^fedper_head_layers must be an int in \[1, 2\]'):
    fedper.head_size_from_layers(_keras(), 3)
  with pytest.raises(ValueError, match=r'head_size must be an int in \[1, 5\]'):
    _build(_arrays(), head=6)
  with pytest.raises(ValueError, match='head_size must be an int >= 1'):
    _build(_arrays(), head=0)
