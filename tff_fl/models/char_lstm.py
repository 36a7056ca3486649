"""Next-character LSTM of TFF's Shakespeare baseline (McMahan et al. 2017; Reddi et al. 2021), and its TFF bridge.

`char_lstm((L,), V)` maps token ids int64 [B, L] to logits [B, L, V]: Embedding(V, 8, mask_zero) -> LSTM(256) ->
LSTM(256) -> Dense(V), built exactly as `tff.simulation.baselines.shakespeare.char_prediction_models`. The TFF
model's loss is cross-entropy on logits (as in TFF's baseline task) and its accuracy ignores the pad id
(`masked_accuracy`, TFF's `MaskedCategoricalAccuracy`); `num_tokens` counts the non-pad targets.
"""

from typing import Callable

import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.simulation.baselines import keras_metrics
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_models

from tff_fl.models import keras_models

MODEL_NAME = 'char_lstm'


def char_lstm(input_shape, num_classes: int) -> tf.keras.Model:
  """TFF's baseline recurrent model for token sequences of shape `input_shape` = [L] over `num_classes` ids."""
  if len(input_shape) != 1:
    raise ValueError(f'model={MODEL_NAME} needs token sequences [L] (task=shakespeare); this task has input '
                     f'shape {tuple(input_shape)}.')
  return char_prediction_models.create_recurrent_model(vocab_size=num_classes, sequence_length=int(input_shape[0]))


def build_tff_model_fn(keras_fn: Callable[[], tf.keras.Model], element_spec,
                       pad_id: int) -> Callable[[], tff.learning.models.VariableModel]:
  """`model_fn` with TFF's baseline loss and metrics: pad targets excluded from accuracy and token counts."""
  input_spec = keras_models.batched_input_spec(element_spec)

  def model_fn():
    return tff.learning.models.from_keras_model(
        keras_fn(),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        input_spec=input_spec,
        metrics=[keras_metrics.NumTokensCounter(masked_tokens=[pad_id]),
                 keras_metrics.MaskedCategoricalAccuracy(masked_tokens=[pad_id], name='masked_accuracy')])

  return model_fn


def register() -> None:
  """Makes `model=char_lstm` known to `keras_models.get_builder` (done at import; idempotent)."""
  if MODEL_NAME not in keras_models.MODELS:
    keras_models.MODELS.register(MODEL_NAME, char_lstm)


register()

