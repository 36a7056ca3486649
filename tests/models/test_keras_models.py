"""Model builders: parameter counts of the paper models (McMahan et al. 2017) and the TFF bridge."""

import collections

import pytest
import tensorflow as tf

from tff_fl.models import keras_models


def test_paper_parameter_counts():
  # 2NN on MNIST: 784*200+200 + 200*200+200 + 200*10+10 = 199,210 (the paper's "199,210 total parameters").
  assert keras_models.mlp_2nn([28, 28, 1], 10).count_params() == 199_210
  # CNN on MNIST: 1,663,370 parameters (as in the paper and TFF's baseline with 'same' padding).
  assert keras_models.cnn([28, 28, 1], 10).count_params() == 1_663_370
  assert keras_models.logreg([8, 8, 1], 10).count_params() == 650


def test_unknown_model_and_cnn_on_flat_input():
  with pytest.raises(ValueError, match='model must be one of'):
    keras_models.get_builder('resnet')
  with pytest.raises(ValueError, match='model=cnn'):
    keras_models.cnn([60], 10)


def test_tff_model_fn_input_spec():
  spec = collections.OrderedDict(x=tf.TensorSpec([8, 8, 1], tf.float32), y=tf.TensorSpec([], tf.int32))
  model = keras_models.build_tff_model_fn(lambda: keras_models.logreg([8, 8, 1], 10), spec)()
  assert model.input_spec['x'].shape.as_list() == [None, 8, 8, 1]
