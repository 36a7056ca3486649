"""Keras model builders for the paper models, and the bridge to `tff.learning.models.VariableModel`.

Every builder returns an uncompiled `tf.keras.Model` that maps a batch of inputs `[B, *input_shape]` to logits
`[B, num_classes]`; the loss is sparse categorical cross-entropy on logits.
"""

import collections
from typing import Callable

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import registry


def logreg(input_shape, num_classes: int) -> tf.keras.Model:
  """Multinomial logistic regression: flatten, one dense layer to logits."""
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=input_shape),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(num_classes),
  ])


def mlp_2nn(input_shape, num_classes: int, hidden_units: int = 200) -> tf.keras.Model:
  """McMahan et al. (2017) "2NN": two hidden ReLU layers of `hidden_units` (200) each."""
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=input_shape),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(hidden_units, activation='relu'),
      tf.keras.layers.Dense(hidden_units, activation='relu'),
      tf.keras.layers.Dense(num_classes),
  ])


def cnn(input_shape, num_classes: int) -> tf.keras.Model:
  """McMahan et al. (2017) CNN: 5x5 conv 32, 2x2 max-pool, 5x5 conv 64, 2x2 max-pool, dense 512, logits.

  `input_shape` is [H, W, C]; 'same' padding keeps it usable for 8x8 digits as well as 28x28 MNIST.
  """
  if len(input_shape) != 3:
    raise ValueError(f'model=cnn needs image inputs [H, W, C]; this task has input shape {tuple(input_shape)}.')
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=input_shape),
      tf.keras.layers.Conv2D(32, 5, padding='same', activation='relu'),
      tf.keras.layers.MaxPool2D(2, padding='same'),
      tf.keras.layers.Conv2D(64, 5, padding='same', activation='relu'),
      tf.keras.layers.MaxPool2D(2, padding='same'),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(512, activation='relu'),
      tf.keras.layers.Dense(num_classes),
  ])


def _torch_default_init(fan_in: int) -> dict:
  """PyTorch's default Conv2d/Linear initialisation: weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  (kaiming_uniform with a=sqrt(5) for the weights), as Keras initializers."""
  bound = 1.0 / float(fan_in) ** 0.5
  return dict(kernel_initializer=tf.keras.initializers.VarianceScaling(1.0 / 3.0, 'fan_in', 'uniform'),
              bias_initializer=tf.keras.initializers.RandomUniform(-bound, bound))


def simple_cnn(input_shape, num_classes: int) -> tf.keras.Model:
  """NIID-Bench's `SimpleCNNMNIST` (Li et al., ICDE 2022; `model.py`) for [28, 28, 1] inputs in [0, 1]:
  conv 6@5x5 (valid) -> ReLU -> max-pool 2 -> conv 16@5x5 (valid) -> ReLU -> max-pool 2 -> [4, 4, 16] -> FC 120 ->
  ReLU -> FC 84 -> ReLU -> FC num_classes (logits); 44,426 parameters for 10 classes.

  Initialised as PyTorch initialises it (U(+-1/sqrt(fan_in)) weights and biases). The flatten order is NHWC rather
  than PyTorch's NCHW, a fixed permutation of FC 120's input rows (the same function class and initial distribution).
  """
  if tuple(input_shape) != (28, 28, 1):
    raise ValueError(f'model=simple_cnn needs 28x28x1 images (mnist, fashion_mnist); this task has input shape '
                     f'{tuple(input_shape)}.')
  channels = input_shape[-1]
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=input_shape),
      tf.keras.layers.Conv2D(6, 5, activation='relu', **_torch_default_init(channels * 25)),
      tf.keras.layers.MaxPool2D(2),
      tf.keras.layers.Conv2D(16, 5, activation='relu', **_torch_default_init(6 * 25)),
      tf.keras.layers.MaxPool2D(2),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(120, activation='relu', **_torch_default_init(16 * 4 * 4)),
      tf.keras.layers.Dense(84, activation='relu', **_torch_default_init(120)),
      tf.keras.layers.Dense(num_classes, **_torch_default_init(84)),
  ])


MODELS = registry.Registry('model')  # name -> builder(input_shape, num_classes) -> tf.keras.Model
MODELS.register('logreg', logreg)
MODELS.register('2nn', mlp_2nn)
MODELS.register('cnn', cnn)
MODELS.register('simple_cnn', simple_cnn)


def get_builder(name: str) -> Callable[..., tf.keras.Model]:
  """The registered builder `name`; an unknown name is a ValueError listing the registered ones."""
  return MODELS.get(name)


def batched_input_spec(element_spec) -> collections.OrderedDict:
  """OrderedDict(x=[None, ...], y=[None, ...]) from the spec of one unbatched example."""
  return collections.OrderedDict(
      (k, tf.TensorSpec([None] + list(s.shape), s.dtype)) for k, s in element_spec.items())


def build_tff_model_fn(keras_fn: Callable[[], tf.keras.Model], element_spec) -> Callable[[], tff.learning.models.VariableModel]:
  """A no-arg `model_fn` for `tff.learning`: a fresh Keras model, cross-entropy on logits, accuracy metric."""
  input_spec = batched_input_spec(element_spec)

  def model_fn():
    return tff.learning.models.from_keras_model(
        keras_fn(),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        input_spec=input_spec,
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])

  return model_fn
