"""NIID-Bench's SimpleCNNMNIST (`simple_cnn`): architecture, PyTorch initialisation bounds, and the forward pass
against a numpy implementation of its definition (valid 5x5 convs, ReLU, 2x2 max-pool, three dense layers)."""

import numpy as np
import pytest
import tensorflow as tf

from tff_fl.models import keras_models


def _conv_valid(x, w, b):
  """x [B, H, W, C], w [5, 5, C, F] -> [B, H-4, W-4, F] (cross-correlation, as PyTorch and Keras)."""
  k = w.shape[0]
  h, wd = x.shape[1] - k + 1, x.shape[2] - k + 1
  out = np.zeros((x.shape[0], h, wd, w.shape[-1]))
  for i in range(k):
    for j in range(k):
      out += np.einsum('bhwc,cf->bhwf', x[:, i:i + h, j:j + wd, :], w[i, j])
  return out + b


def _pool(x):
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _numpy_forward(weights, x):
  w1, b1, w2, b2, f1, c1, f2, c2, f3, c3 = [np.asarray(v, np.float64) for v in weights]
  relu = lambda z: np.maximum(z, 0)
  h = _pool(relu(_conv_valid(x, w1, b1)))
  h = _pool(relu(_conv_valid(h, w2, b2)))
  h = h.reshape(len(x), -1)
  return relu(relu(h @ f1 + c1) @ f2 + c2) @ f3 + c3


def test_architecture_and_parameter_count():
  model = keras_models.get_builder('simple_cnn')([28, 28, 1], 10)
  # 6*25+6 + 16*6*25+16 + 256*120+120 + 120*84+84 + 84*10+10
  assert model.count_params() == 44_426
  assert [tuple(v.shape) for v in model.trainable_weights[::2]] == [(5, 5, 1, 6), (5, 5, 6, 16), (256, 120),
                                                                     (120, 84), (84, 10)]


def test_forward_matches_numpy_definition():
  tf.keras.utils.set_random_seed(0)
  model = keras_models.simple_cnn([28, 28, 1], 10)
  x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
  np.testing.assert_allclose(model(x).numpy(), _numpy_forward([v.numpy() for v in model.trainable_weights], x),
                             atol=1e-4)


def test_pytorch_default_initialisation_bounds():
  tf.keras.utils.set_random_seed(1)
  model = keras_models.simple_cnn([28, 28, 1], 10)
  for (kernel, bias), fan_in in zip(zip(model.trainable_weights[::2], model.trainable_weights[1::2]),
                                    (25, 150, 256, 120, 84)):
    bound = 1 / np.sqrt(fan_in)
    for v in (kernel.numpy(), bias.numpy()):
      assert np.max(np.abs(v)) <= bound + 1e-7
    assert np.max(np.abs(kernel.numpy())) > 0.9 * bound  # Uniform over the full range, not a narrower one.
    np.testing.assert_allclose(np.std(kernel.numpy()), bound / np.sqrt(3), rtol=0.25)


def test_needs_28x28x1_images():
  with pytest.raises(ValueError, match='^model=simple_cnn needs 28x28x1'):
    keras_models.simple_cnn([8, 8, 1], 10)
