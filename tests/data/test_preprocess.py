"""Client preprocessing: transform statistics vs numpy, seeding, the on-client dataset computation, eval untouched."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_preprocessing

from tff_fl import tasks
from tff_fl.algorithms import fed_avg
from tff_fl.data import augment_spec
from tff_fl.data import preprocess
from tff_fl.simulation import training_loop

N, H, W = 400, 5, 6


@pytest.fixture(scope='module')
def images():
  rng = np.random.default_rng(0)
  return rng.uniform(0.0, 1.0, size=(N, H, W, 1)).astype(np.float32)


def _run(x, augment='', preprocess_spec='', epochs=1, batch_size=N, round_num=1):
  """Preprocessed stream of (x, y = example index), eagerly, as one client would build it."""
  raw = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=np.arange(len(x), dtype=np.int32)))
  spec = preprocess.PreprocessSpec.from_flags(preprocess_spec, augment, epochs=epochs, batch_size=batch_size, seed=3)
  spec.validate(raw.element_spec)
  batches = list(preprocess.preprocess_train(raw, spec, preprocess.client_seed(3, 'c0', round_num)))
  return (np.concatenate([b['x'].numpy() for b in batches]), np.concatenate([b['y'].numpy() for b in batches]),
          [len(b['y']) for b in batches])


def test_flip_is_identity_or_mirror_with_probability_half(images):
  out, idx, _ = _run(images, 'flip')
  src = images[idx]
  same = np.all(out == src, axis=(1, 2, 3))
  mirrored = np.all(out == src[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(same | mirrored)
  assert abs(mirrored.mean() - 0.5) < 0.1  # Binomial(400, 0.5): sd 0.025.


def test_brightness_adds_one_uniform_delta_per_image(images):
  out, idx, _ = _run(images, 'brightness(0.3)')
  delta = out - images[idx]
  per_image = delta.reshape(N, -1)
  np.testing.assert_allclose(per_image, per_image[:, :1] * np.ones_like(per_image), atol=1e-6)
  d = per_image[:, 0]
  assert np.all(np.abs(d) <= 0.3 + 1e-6)
  assert abs(d.mean()) < 0.04 and abs(d.std() - 0.3 / np.sqrt(3)) < 0.03  # Uniform(-0.3, 0.3).


def test_contrast_scales_deviation_from_image_mean(images):
  out, idx, _ = _run(images, 'contrast(0.5)')
  src = images[idx]
  mean = src.mean(axis=(1, 2), keepdims=True)
  factor = ((out - mean) * (src - mean)).sum(axis=(1, 2, 3)) / ((src - mean) ** 2).sum(axis=(1, 2, 3))
  np.testing.assert_allclose(out, (src - mean) * factor[:, None, None, None] + mean, atol=1e-5)
  assert factor.min() >= 0.5 - 1e-5 and factor.max() <= 1.5 + 1e-5 and abs(factor.mean() - 1.0) < 0.05


def test_crop_is_a_window_of_the_zero_padded_image_at_every_offset(images):
  out, idx, _ = _run(images, 'crop(2)')
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  offsets = []
  for o, i in zip(out, idx):
    hits = [(a, b) for a in range(5) for b in range(5) if np.array_equal(o, padded[i, a:a + H, b:b + W])]
    assert hits, 'crop output is not a window of the padded image'
    offsets.append(hits[0])
  assert len(set(offsets)) == 25


def test_resize_then_random_crop_back(images):
  out, idx, _ = _run(images, 'resize(8)')
  resized = tf.image.resize(images, [8, 8]).numpy()
  for o, i in zip(out[:50], idx[:50]):
    assert any(np.allclose(o, resized[i, a:a + H, b:b + W]) for a in range(4) for b in range(3))


def test_normalize_constants_and_client_statistics(images):
  out, idx, _ = _run(images, preprocess_spec='normalize(0.5,0.25)')
  np.testing.assert_allclose(out, (images[idx] - 0.5) / 0.25, rtol=1e-6)
  out, idx, _ = _run(images, preprocess_spec='normalize(client)')
  np.testing.assert_allclose(out, (images[idx] - images.mean()) / images.std(), rtol=1e-4, atol=1e-5)
  assert abs(out.mean()) < 1e-5 and abs(out.std() - 1.0) < 1e-4


def test_shuffle_repeat_batch_take(images):
  x = images[:23]
  out, idx, sizes = _run(x, epochs=3, batch_size=5)
  assert sizes == [5] * 13 + [4]
  epochs = idx.reshape(3, 23)
  for e in epochs:
    assert sorted(e) == list(range(23))  # Each epoch is a permutation of the client's data.
  assert not np.array_equal(epochs[0], epochs[1])  # Reshuffled every epoch.
  np.testing.assert_array_equal(out, x[idx])
  _, _, sizes = _run(x, preprocess_spec='take(2)', epochs=3, batch_size=5)
  assert sizes == [5, 5]


def test_seeded_by_client_and_round(images):
  a = _run(images[:50], 'flip,brightness(0.2),crop(1)', round_num=4)
  b = _run(images[:50], 'flip,brightness(0.2),crop(1)', round_num=4)
  c = _run(images[:50], 'flip,brightness(0.2),crop(1)', round_num=5)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[1], c[1]) or not np.allclose(a[0], c[0])
  s = [preprocess.client_seed(0, cid, 1).numpy() for cid in ('a', 'b')]
  assert not np.array_equal(s[0], s[1])


def test_augment_needs_images_and_resize_size():
  spec = preprocess.PreprocessSpec(augment=augment_spec.parse_augment('flip'))
  with pytest.raises(ValueError, match=r'--augment needs image examples \[H, W, C\]'):
    spec.validate(collections.OrderedDict(x=tf.TensorSpec([60], tf.float32)))
  spec = preprocess.PreprocessSpec(augment=augment_spec.parse_augment('resize(4)'))
  with pytest.raises(ValueError, match='resize.size. needs size >= the image side 6'):
    spec.validate(collections.OrderedDict(x=tf.TensorSpec([H, W, 1], tf.float32)))


def test_char_tokenize_matches_tff_shakespeare_preprocessing():
  snippets = ['To be, or not to be', 'Ay \u00e9 there', 'x' * 25]
  seq = 8
  ours = list(preprocess.char_tokenize(tf.data.Dataset.from_tensor_slices(snippets),
                                       char_prediction_preprocessing.CHAR_VOCAB, seq))
  ref_fn = char_prediction_preprocessing.create_preprocess_fn(
      tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=1000, shuffle_buffer_size=1), sequence_length=seq)
  ref_x, ref_y = next(iter(ref_fn(tf.data.Dataset.from_tensor_slices(collections.OrderedDict(snippets=snippets)))))
  np.testing.assert_array_equal(np.stack([e['x'] for e in ours]), ref_x.numpy())
  np.testing.assert_array_equal(np.stack([e['y'] for e in ours]), ref_y.numpy())


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(num_clients=4, model='logreg', partition='iid', seed=1))


def test_dataset_computation_builds_client_training_data_on_the_client(task):
  spec = preprocess.PreprocessSpec(epochs=1, batch_size=1000, normalize=('client',), seed=0)
  comp = preprocess.build_dataset_computation(task.data.train_client_data(), spec)
  assert str(comp.type_signature) == '(<client_id=str,round_num=int64> -> <x=float32[?,8,8,1],y=int32[?]>*)'
  cid = task.client_ids[2]
  batch = next(iter(comp(collections.OrderedDict(client_id=cid, round_num=1))))
  x, y = task.data.train[cid]
  expect = (x - x.mean()) / x.std()
  order = np.lexsort(expect.reshape(len(x), -1).T)
  got_order = np.lexsort(batch['x'].numpy().reshape(len(x), -1).T)
  np.testing.assert_allclose(batch['x'].numpy()[got_order], expect[order], atol=1e-5)
  np.testing.assert_array_equal(batch['y'].numpy()[got_order], y[order])


def _numpy_logreg_accuracy(weights, task):
  x, y = task.data.centralized('test')
  logits = x.reshape(len(x), -1) @ weights.trainable[0] + weights.trainable[1]
  return float(np.mean(np.argmax(logits, axis=1) == y))


def test_composed_process_trains_on_preprocessed_data_and_eval_data_is_untouched(task, tmp_path):
  spec = preprocess.PreprocessSpec.from_flags('normalize(10,0.01)', 'brightness(0.5),flip', epochs=1, batch_size=10,
                                              seed=0)
  process = preprocess.compose(fed_avg.build_fed_avg(task.model_fn, tff.learning.optimizers.build_sgdm(0.01)),
                               task.data.train_client_data(), spec)
  released = {}

  class Capture(training_loop.RoundHook):
    def on_train_end(self, process, state, summary):
      released['weights'] = process.get_model_weights(state)

  cfg = training_loop.LoopConfig(total_rounds=1, clients_per_round=2, client_batch_size=10)
  summary = training_loop.run_training(process, task, cfg, str(tmp_path), {}, client_inputs_fn=preprocess.client_inputs,
                                       hooks=[Capture()], log=lambda _: None)
  # Training saw x ~ -1000 (normalised): the loss is huge. Evaluation used the raw test arrays, as numpy does.
  assert summary['eval_accuracy'] == pytest.approx(_numpy_logreg_accuracy(released['weights'], task), abs=1e-6)
  for cid in task.client_ids:
    ev = next(iter(task.eval_dataset(cid)))
    np.testing.assert_array_equal(ev['x'].numpy(), task.data.test[cid][0])


def test_eval_uses_the_clients_training_normalisation_and_no_augmentation(task):
  spec = preprocess.PreprocessSpec.from_flags('normalize(client)', 'flip,brightness(0.5)', epochs=1, batch_size=10,
                                              seed=0)
  cid = task.client_ids[1]
  train = task.data.train_client_data().create_tf_dataset_for_client(cid)
  test = task.data.test_client_data().create_tf_dataset_for_client(cid)
  batch = next(iter(preprocess.normalized_eval_dataset(train, test, spec)))
  x_train = task.data.train[cid][0].astype(np.float64)
  x_test, y_test = task.data.test[cid]
  expect = (x_test - x_train.mean()) / x_train.std()  # Train statistics; test order kept; no flip or brightness.
  np.testing.assert_allclose(batch['x'].numpy(), expect, atol=1e-5)
  np.testing.assert_array_equal(batch['y'].numpy(), y_test)
