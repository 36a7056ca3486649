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


MODELS = registry.Registry('model')  # name -> builder(input_shape, num_classes) -> tf.keras.Model
MODELS.register('logreg', logreg)
MODELS.register('2nn', mlp_2nn)
MODELS.register('cnn', cnn)


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
