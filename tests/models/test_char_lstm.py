"""The Shakespeare char LSTM: TFF baseline architecture (parameter count by hand) and its validation."""

import pytest

from tff_fl.models import char_lstm
from tff_fl.models import keras_models


def test_parameter_count_by_hand():
  model = char_lstm.char_lstm((80,), 90)
  embedding = 90 * 8
  lstm1 = 4 * 256 * (8 + 256 + 1)
  lstm2 = 4 * 256 * (256 + 256 + 1)
  dense = 256 * 90 + 90
  assert model.count_params() == embedding + lstm1 + lstm2 + dense == 820_522
  assert model.output_shape == (None, 80, 90)


def test_registered_and_rejects_images():
  char_lstm.register()
  assert keras_models.get_builder('char_lstm') is char_lstm.char_lstm
  with pytest.raises(ValueError, match='model=char_lstm needs token sequences'):
    char_lstm.char_lstm((28, 28, 1), 10)
