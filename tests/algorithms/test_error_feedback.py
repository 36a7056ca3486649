"""Top-k with error feedback: residuals against numpy, and EF top-k vs stateless top-k on a small problem."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.aggregators import compression
from tff_fl.algorithms import error_feedback
from tff_fl.algorithms import fed_avg
from tff_fl.models import keras_models

from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py

DIM_X, CLASSES, BATCH, LR = 8, 4, 5, 0.2
SPEC = collections.OrderedDict(x=tf.TensorSpec([DIM_X], tf.float32), y=tf.TensorSpec([], tf.int32))
MODEL_FN = keras_models.build_tff_model_fn(lambda: keras_models.logreg([DIM_X], CLASSES), SPEC)
D = DIM_X * CLASSES + CLASSES


def _arrays(sizes=(10, 15), seed=0):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(DIM_X, CLASSES))
  out = []
  for n in sizes:
    x = rng.normal(size=(n, DIM_X)).astype(np.float32)
    out.append((x, np.argmax(x @ w + rng.normal(scale=0.3, size=(n, CLASSES)), 1).astype(np.int32)))
  return out


def _datasets(arrays):
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(BATCH) for x, y in arrays]


def _sgd(lr):
  return tff.learning.optimizers.build_sgdm(learning_rate=lr)


def _numpy_delta(params, x, y):
  """x0 - x_final of local minibatch SGD on softmax cross-entropy (numpy), flattened like the TFF update."""
  w, b = params[0].astype(np.float64), params[1].astype(np.float64)
  w0, b0 = w.copy(), b.copy()
  for s in range(0, len(x), BATCH):
    xb, yb = x[s:s + BATCH].astype(np.float64), y[s:s + BATCH]
    _, gw, gb = logreg_loss_and_grads(w, b, xb, yb)
    w, b = w - LR * gw, b - LR * gb
  return np.concatenate([(w0 - w).ravel(), b0 - b])


def _numpy_topk(v, k):
  keep = np.argsort(-np.abs(v), kind='stable')[:k]
  out = np.zeros_like(v)
  out[keep] = v[keep]
  return out


def test_residual_accumulates_exactly_what_topk_dropped():
  arrays, fraction = _arrays(), 0.1
  k = error_feedback.num_kept(fraction, D)
  process = error_feedback.build_topk_error_feedback(MODEL_FN, _sgd(LR), fraction)
  state = process.initialize()
  states = [process.initial_client_state()] * 2
  residuals = [np.zeros(D), np.zeros(D)]
  sizes = np.array([len(x) for x, _ in arrays], np.float64)
  for _ in range(2):  # The second round starts from non-zero residuals.
    before = [np.asarray(w) for w in process.get_model_weights(state).trainable]
    sent = []
    for i, (x, y) in enumerate(arrays):
      corrected = _numpy_delta(before, x, y) + residuals[i]
      sent.append(_numpy_topk(corrected, k))
      residuals[i] = corrected - sent[-1]
    state, states, metrics = process.next(state, _datasets(arrays), states)
    for i in range(2):
      np.testing.assert_allclose(states[i]['residual'], residuals[i], atol=1e-5)
      assert np.count_nonzero(residuals[i]) == D - k
    after = np.concatenate([np.asarray(w).ravel() for w in process.get_model_weights(state).trainable])
    mean_sent = (sizes[0] * sent[0] + sizes[1] * sent[1]) / sizes.sum()
    np.testing.assert_allclose(np.concatenate([w.ravel() for w in before]) - after, mean_sent, atol=1e-5)
  assert metrics['aggregator']['bits_per_client'] == k * (32 + int(np.ceil(np.log2(D))))


def _pooled_loss(weights, arrays):
  x = np.concatenate([a[0] for a in arrays]).astype(np.float64)
  y = np.concatenate([a[1] for a in arrays])
  logits = x @ weights[0] + weights[1]
  logits -= logits.max(1, keepdims=True)
  return float(np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(y)), y]))


def test_error_feedback_beats_stateless_topk():
  arrays, fraction, rounds = _arrays(sizes=(20, 20, 20), seed=1), 0.05, 12
  data = _datasets(arrays)
  ef = error_feedback.build_topk_error_feedback(MODEL_FN, _sgd(LR), fraction)
  stateless = fed_avg.build_fed_avg(MODEL_FN, _sgd(LR), model_aggregator=compression.topk(fraction))
  ef_state, states = ef.initialize(), [ef.initial_client_state()] * 3
  sl_state = stateless.set_model_weights(stateless.initialize(), ef.get_model_weights(ef_state))
  initial = _pooled_loss(ef.get_model_weights(ef_state).trainable, arrays)
  for _ in range(rounds):
    ef_state, states, ef_metrics = ef.next(ef_state, data, states)
    sl_out = stateless.next(sl_state, data)
    sl_state = sl_out.state
  ef_loss = _pooled_loss(ef.get_model_weights(ef_state).trainable, arrays)
  sl_loss = _pooled_loss(stateless.get_model_weights(sl_state).trainable, arrays)
  # Same bits on the wire per client and round.
  assert ef_metrics['aggregator']['bits_per_client'] == sl_out.metrics['aggregator']['bits_per_client']
  assert sl_loss < initial
  assert ef_loss < sl_loss - 0.05, (initial, ef_loss, sl_loss)


def test_bad_fraction():
  with pytest.raises(ValueError, match='fraction'):
    error_feedback.build_topk_error_feedback(MODEL_FN, _sgd(LR), 0.0)
