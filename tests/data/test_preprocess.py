"""Client preprocessing primitives: augmentation statistics vs numpy / the tf image ops, seeding per client, round and
example (independent of batch boundaries), normalisation vs numpy, the shuffle buffer, char tokenisation vs TFF."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_preprocessing

from tff_fl import tasks
from tff_fl.data import augment_spec
from tff_fl.data import preprocess

N, H, W = 400, 5, 6


@pytest.fixture(scope='module')
def images():
  rng = np.random.default_rng(0)
  return rng.uniform(0.0, 1.0, size=(N, H, W, 1)).astype(np.float32)


def _augment(x, augment, round_num=1, client='c0', offset=0):
  """x augmented as client `client`'s round stream at positions offset.. (seed 3)."""
  return _augment_fn(augment, tasks.derived_seed(3, round_num, client))(tf.constant(x), tf.constant(offset)).numpy()


_FNS = {}


def _augment_fn(augment, seed):
  """One traced function per (augment, seed) for any batch size and offset."""
  if (augment, seed) not in _FNS:
    ops = augment_spec.parse_augment(augment)
    _FNS[augment, seed] = tf.function(lambda x, offset: preprocess.augment_batch(x, ops, seed, offset),
                                      input_signature=[tf.TensorSpec([None, H, W, 1]), tf.TensorSpec([], tf.int32)])
  return _FNS[augment, seed]


def test_flip_is_identity_or_mirror_with_probability_half(images):
  out = _augment(images, 'flip')
  same = np.all(out == images, axis=(1, 2, 3))
  mirrored = np.all(out == images[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(same | mirrored)
  assert abs(mirrored.mean() - 0.5) < 0.1  # Binomial(400, 0.5): sd 0.025.


def test_brightness_adds_one_uniform_delta_per_image(images):
  per_image = (_augment(images, 'brightness(0.3)') - images).reshape(N, -1)
  np.testing.assert_allclose(per_image, per_image[:, :1] * np.ones_like(per_image), atol=1e-6)
  d = per_image[:, 0]
  assert np.all(np.abs(d) <= 0.3 + 1e-6)
  assert abs(d.mean()) < 0.04 and abs(d.std() - 0.3 / np.sqrt(3)) < 0.03  # Uniform(-0.3, 0.3).


def test_contrast_scales_deviation_from_image_mean(images):
  out = _augment(images, 'contrast(0.5)')
  mean = images.mean(axis=(1, 2), keepdims=True)
  factor = ((out - mean) * (images - mean)).sum(axis=(1, 2, 3)) / ((images - mean) ** 2).sum(axis=(1, 2, 3))
  np.testing.assert_allclose(out, (images - mean) * factor[:, None, None, None] + mean, atol=1e-5)
  assert factor.min() >= 0.5 - 1e-5 and factor.max() <= 1.5 + 1e-5 and abs(factor.mean() - 1.0) < 0.05


def test_crop_is_a_window_of_the_zero_padded_image_at_every_offset(images):
  out = _augment(images, 'crop(2)')
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  offsets = []
  for i, o in enumerate(out):
    hits = [(a, b) for a in range(5) for b in range(5) if np.array_equal(o, padded[i, a:a + H, b:b + W])]
    assert hits, 'crop output is not a window of the padded image'
    offsets.append(hits[0])
  assert len(set(offsets)) == 25


def test_resize_then_random_crop_back(images):
  out = _augment(images[:50], 'resize(8)')
  resized = tf.image.resize(images[:50], [8, 8]).numpy()
  for o, r in zip(out, resized):
    assert any(np.allclose(o, r[a:a + H, b:b + W]) for a in range(4) for b in range(3))


def test_seeded_by_client_round_and_example_not_by_batching(images):
  ops = 'flip,brightness(0.2),crop(1)'
  a = _augment(images[:50], ops, round_num=4)
  np.testing.assert_array_equal(a, _augment(images[:50], ops, round_num=4))
  assert not np.allclose(a, _augment(images[:50], ops, round_num=5))
  assert not np.allclose(a, _augment(images[:50], ops, round_num=4, client='c1'))
  # The same example position gets the same draw whatever batch it falls in.
  pieces = [_augment(images[lo:min(lo + 7, 50)], ops, round_num=4, offset=lo) for lo in range(0, 50, 7)]
  np.testing.assert_array_equal(np.concatenate(pieces), a)


def test_normalisation_statistics_and_eval_arrays_match_numpy(images):
  x = images.astype(np.float64)
  assert preprocess.client_statistics(images) == pytest.approx((x.mean(), x.std()), rel=1e-12)
  assert preprocess.client_statistics(np.ones((3, 2), np.float32)) == (1.0, 1e-6)  # std floored.
  spec = preprocess.PreprocessSpec.from_flags('normalize(client)', 'flip')
  train = {'a': (images[:100], np.zeros(100)), 'b': (images[100:] * 3.0, np.zeros(300))}
  test = {'a': (images[:10], np.arange(10)), 'b': (images[10:30], np.arange(20))}
  out = preprocess.normalized_eval_arrays(spec, train, test)
  for cid in ('a', 'b'):  # The client's own training statistics; test order kept; never augmented.
    xt = train[cid][0].astype(np.float64)
    np.testing.assert_allclose(out[cid][0], (test[cid][0] - xt.mean()) / xt.std(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[cid][1], test[cid][1])
  out = preprocess.normalized_eval_arrays(preprocess.PreprocessSpec.from_flags('normalize(0.5,0.25)', ''), train, test)
  np.testing.assert_allclose(out['b'][0], (test['b'][0] - 0.5) / 0.25, rtol=1e-6)
  assert preprocess.normalized_eval_arrays(preprocess.PreprocessSpec.from_flags('take(3)', 'flip'), train, test) is None


def test_buffered_shuffle_is_a_permutation_within_the_buffer_reach():
  rng = np.random.default_rng(0)
  np.testing.assert_array_equal(preprocess.buffered_shuffle(23, 1, rng), np.arange(23))  # Buffer 1: no shuffle.
  orders = [preprocess.buffered_shuffle(23, 4, rng) for _ in range(200)]
  for o in orders:
    assert sorted(o) == list(range(23))
    assert np.all(o[:20] < np.arange(20) + 4)  # Output k comes from the first k + buffer inputs.
  first = np.array([o[0] for o in orders])
  assert set(first) == {0, 1, 2, 3} and abs(np.mean(first == 0) - 0.25) < 0.1  # Uniform over the first buffer.
  full = np.stack([preprocess.buffered_shuffle(10, 10, rng) for _ in range(2000)])
  assert np.abs(np.mean(full == 9, axis=0) - 0.1).max() < 0.04  # A full buffer: a uniform permutation.


def test_spec_from_flags_and_validation():
  spec = preprocess.PreprocessSpec.from_flags('normalize(client),take(5),shuffle(100)', 'flip,crop(2)')
  assert spec == preprocess.PreprocessSpec(shuffle_buffer=100, max_batches=5, normalize=('client',),
                                           augment=(augment_spec.Op('flip'), augment_spec.Op('crop', (2.0,))))
  assert spec.active and not preprocess.PreprocessSpec.from_flags('', '').active
  with pytest.raises(ValueError, match=r'--augment needs image examples \[H, W, C\]'):
    preprocess.PreprocessSpec(augment=augment_spec.parse_augment('flip')).validate((60,))
  with pytest.raises(ValueError, match='resize.size. needs size >= the image side 6'):
    preprocess.PreprocessSpec(augment=augment_spec.parse_augment('resize(4)')).validate((H, W, 1))
  preprocess.PreprocessSpec(augment=augment_spec.parse_augment('resize(6)')).validate((H, W, 1))
  with pytest.raises(ValueError, match='^--client_preprocess needs float examples .* x of dtype int64.$'):
    preprocess.PreprocessSpec(normalize=('client',)).validate((80,), np.int64)
  preprocess.PreprocessSpec(max_batches=3).validate((80,), np.int64)  # take / shuffle: any examples.


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
