"""The functional form of a model computes what the Keras model computes: logits, per-example loss (whose mean is
`forward_pass`'s batch loss) and the metric variables' increments of a masked batch; models it cannot express are
refused with the reason."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_fl.models import char_lstm
from tff_fl.models import functional
from tff_fl.models import keras_models

SPECS = {'logreg': [8, 8, 1], '2nn': [8, 8, 1], 'cnn': [8, 8, 1], 'simple_cnn': [28, 28, 1]}


def _element_spec(shape):
  return collections.OrderedDict(x=tf.TensorSpec(shape, tf.float32), y=tf.TensorSpec([], tf.int32))


def _model_fn(keras_fn, shape):
  return keras_models.build_tff_model_fn(keras_fn, _element_spec(shape))


@pytest.mark.parametrize('name', sorted(SPECS))
def test_logits_loss_and_metrics_equal_the_keras_model(name):
  shape = SPECS[name]
  model = _model_fn(lambda: keras_models.get_builder(name)(shape, 10), shape)()
  fm = functional.from_model(model)
  rng = np.random.default_rng(0)
  x = rng.normal(size=[6] + shape).astype(np.float32)
  y = rng.integers(0, 10, 6).astype(np.int32)
  weights = [v.read_value() for v in model.trainable_variables]
  np.testing.assert_allclose(fm.apply(weights, x), model.predict_on_batch(x, training=True), rtol=1e-5, atol=1e-5)

  # A batch of 4 real rows padded to 6: increments equal the Keras metrics' update on the 4 real rows.
  mask = np.array([1, 1, 0, 1, 1, 0], np.float32)
  real = mask > 0
  before = [v.numpy() for v in model.local_variables]
  output = model.forward_pass(collections.OrderedDict(x=x[real], y=y[real]), training=True)
  expected = [v.numpy() - b for v, b in zip(model.local_variables, before)]
  logits = fm.apply(weights, x)
  losses = fm.per_example_loss(y, logits)
  batch_loss = tf.reduce_sum(losses * mask) / tf.reduce_sum(mask)
  np.testing.assert_allclose(batch_loss, output.loss, rtol=1e-5)
  got = fm.metric_increments(y, logits, mask, batch_loss)
  assert [g.dtype for g in got] == [v.dtype for v in model.local_variables]
  for g, e in zip(got, expected):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
  empty = fm.metric_increments(y, logits, np.zeros(6, np.float32), tf.constant(0.0))
  assert all(float(e) == 0.0 for e in empty)  # An all-padding batch adds no example, batch or metric.


@pytest.mark.parametrize('name', sorted(SPECS))
def test_stacked_clients_equal_each_client_alone(name):
  """apply_stacked with per-client weights [C, ...] on [C, B, ...]: each client's logits and gradient are those
  of `apply` on its own weights; stacked metric increments are the sum of the clients' increments."""
  shape = SPECS[name]
  model = _model_fn(lambda: keras_models.get_builder(name)(shape, 10), shape)()
  fm = functional.from_model(model)
  rng = np.random.default_rng(1)
  clients, batch = 3, 5
  base = [v.numpy() for v in model.trainable_variables]
  weights = [np.stack([w + 0.1 * rng.normal(size=w.shape).astype(np.float32) for _ in range(clients)]) for w in base]
  x = rng.normal(size=[clients, batch] + shape).astype(np.float32)
  y = rng.integers(0, 10, [clients, batch]).astype(np.int32)
  mask = np.ones([clients, batch], np.float32)
  mask[1, 3:] = 0.0

  def loss_of(apply, w, xs, ys, ms):
    per_example = fm.per_example_loss(ys, apply(w, xs))
    return tf.reduce_sum(tf.reduce_sum(per_example * ms, -1) / tf.reduce_sum(ms, -1))

  stacked_w = [tf.constant(w) for w in weights]
  with tf.GradientTape() as tape:
    tape.watch(stacked_w)
    stacked_logits = fm.apply_stacked(stacked_w, x)
    total = loss_of(fm.apply_stacked, stacked_w, x, y, mask)
  stacked_grads = tape.gradient(total, stacked_w)
  losses = tf.reduce_sum(fm.per_example_loss(y, stacked_logits) * mask, 1) / tf.reduce_sum(mask, 1)
  expected_increments = None
  for c in range(clients):
    own = [tf.constant(w[c]) for w in weights]
    with tf.GradientTape() as tape:
      tape.watch(own)
      logits = fm.apply(own, x[c])
      loss = loss_of(fm.apply, own, x[c], y[c], mask[c])
    np.testing.assert_allclose(stacked_logits[c], logits, rtol=1e-5, atol=1e-5)
    for g, s in zip(tape.gradient(loss, own), stacked_grads):
      np.testing.assert_allclose(s[c], g, rtol=1e-4, atol=1e-5)
    increments = fm.metric_increments(y[c], logits, mask[c], loss)
    expected_increments = increments if expected_increments is None else [
        a + b for a, b in zip(expected_increments, increments)]
  for got, want in zip(fm.metric_increments(y, stacked_logits, mask, losses), expected_increments):
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize('keras_fn, reason', [
    (lambda: tf.keras.Sequential([tf.keras.layers.InputLayer([4]), tf.keras.layers.Dense(8),
                                  tf.keras.layers.Dropout(0.5), tf.keras.layers.Dense(10)]), 'Dropout with rate 0.5'),
    (lambda: tf.keras.Sequential([tf.keras.layers.InputLayer([4]), tf.keras.layers.BatchNormalization(),
                                  tf.keras.layers.Dense(10)]), 'non-trainable weights'),
    (lambda: tf.keras.Sequential([tf.keras.layers.InputLayer([4]), tf.keras.layers.Dense(
        10, kernel_regularizer=tf.keras.regularizers.l2(0.1))]), 'regularization losses'),
    (lambda: tf.keras.Sequential([tf.keras.layers.InputLayer([4]), tf.keras.layers.Dense(10, activation='elu')]),
     "activation 'elu'"),
])
def test_models_without_a_functional_form_say_why(keras_fn, reason):
  with pytest.raises(functional.Unsupported, match=reason):
    functional.from_model(_model_fn(keras_fn, [4])())


def test_the_char_lstm_has_no_functional_form():
  spec = collections.OrderedDict(x=tf.TensorSpec([5], tf.int32), y=tf.TensorSpec([5], tf.int32))
  model_fn = char_lstm.build_tff_model_fn(lambda: char_lstm.char_lstm([5], 10), spec, pad_id=0)
  with pytest.raises(functional.Unsupported, match='has no functional form'):
    functional.from_model(model_fn())
