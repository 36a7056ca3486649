"""Per-client federated evaluation against a numpy evaluation of the same logistic-regression model."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.models import keras_models
from tff_fl.simulation import evaluation

SPEC = collections.OrderedDict(x=tf.TensorSpec([5], tf.float32), y=tf.TensorSpec([], tf.int32))


def test_per_client_eval_matches_numpy():
  model_fn = keras_models.build_tff_model_fn(lambda: keras_models.logreg([5], 4), SPEC)
  rng = np.random.default_rng(0)
  w, b = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
  clients = [(rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, 4, n).astype(np.int32)) for n in (3, 17, 40)]
  data = [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(8) for x, y in clients]
  weights = tff.learning.models.ModelWeights(trainable=[w, b], non_trainable=[])
  results = evaluation.build_per_client_eval(model_fn)(weights, data)
  summary = evaluation.summarize(['a', 'b', 'c'], results)

  accs, losses, ns = [], [], []
  for x, y in clients:
    logits = x.astype(np.float64) @ w + b
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    losses.append(-logp[np.arange(len(y)), y].sum())
    accs.append(np.mean(np.argmax(logits, 1) == y))
    ns.append(len(y))
  np.testing.assert_allclose([r['num_examples'] for r in results], ns)
  np.testing.assert_allclose(summary['eval_loss'], np.sum(losses) / np.sum(ns), rtol=1e-5)
  np.testing.assert_allclose(summary['eval_accuracy'], np.dot(accs, ns) / np.sum(ns), rtol=1e-6)
  np.testing.assert_allclose(list(summary['per_client_accuracy'].values()), accs, rtol=1e-6)
  assert summary['client_accuracy_min'] == min(accs)
  np.testing.assert_allclose(summary['client_accuracy_p50'], np.median(accs))


def test_pad_targets_are_not_counted():
  spec = collections.OrderedDict(x=tf.TensorSpec([3], tf.int64), y=tf.TensorSpec([3], tf.int64))

  def keras_fn():  # Per-position logits [B, 3, 4] from a fixed embedding of the input ids.
    return tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=[3], dtype=tf.int64),
                                tf.keras.layers.Embedding(5, 4)])

  model_fn = keras_models.build_tff_model_fn(keras_fn, spec)
  table = np.eye(5, 4, dtype=np.float32)  # id i predicts class i (id 4 -> all-zero logits -> class 0).
  weights = tff.learning.models.ModelWeights(trainable=[table], non_trainable=[])
  x = np.array([[1, 2, 3], [1, 0, 0]], np.int64)
  y = np.array([[1, 2, 0], [3, 0, 0]], np.int64)  # Pad id 0 marks padding.
  data = [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(2)]
  res = evaluation.build_per_client_eval(model_fn, pad_id=0)(weights, data)[0]
  valid = y != 0
  assert res['num_predictions'] == valid.sum() == 3
  assert res['correct'] == np.sum((x == y) & valid) == 2
  unmasked = evaluation.build_per_client_eval(model_fn)(weights, data)[0]
  assert unmasked['num_predictions'] == 6 and unmasked['correct'] == np.sum(x == y)
