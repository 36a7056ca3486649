"""Attacks: each malicious update vs the honest update from the unwrapped client work; composition."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import aggregators as agg
from tff_fl.algorithms import attacks
from tff_fl.algorithms import fed_avg

NUM_CLASSES = 3


def _model_fn():
  keras_model = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(4,)),
                                     tf.keras.layers.Dense(NUM_CLASSES, kernel_initializer='zeros')])
  spec = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32))
  return tff.learning.models.from_keras_model(
      keras_model, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), input_spec=spec)


def _datasets(n=3):
  rng = np.random.default_rng(0)
  return [tf.data.Dataset.from_tensor_slices((rng.normal(size=(8, 4)).astype(np.float32),
                                              rng.integers(0, NUM_CLASSES, size=8).astype(np.int32))).batch(4)
          for _ in range(n)]


@pytest.fixture(scope='module')
def inner():
  return tff.learning.templates.build_model_delta_client_work(
      _model_fn, tff.learning.optimizers.build_sgdm(0.1), tff.learning.ClientWeighting.NUM_EXAMPLES)


@pytest.fixture(scope='module')
def weights():
  w = tff.learning.models.ModelWeights.from_model(_model_fn())
  return tff.learning.models.ModelWeights(trainable=[v.numpy() for v in w.trainable], non_trainable=[])


def _updates(results):
  return [np.concatenate([np.ravel(u) for u in r.update]) for r in results]


def _run_attacked(inner, weights, attack, malicious, seeds, datasets, **kwargs):
  process = attacks.build_attacked_client_work(inner, attack, num_classes=NUM_CLASSES, **kwargs)
  data = [attacks.attacked_client_data(d, m, s) for d, m, s in zip(datasets, malicious, seeds)]
  return process.next(process.initialize(), [weights] * len(data), data)


def test_wrapped_type_signature(inner):
  process = attacks.build_attacked_client_work(inner, 'sign_flip')
  data_type = process.next.type_signature.parameter[2].member
  assert data_type.data == inner.next.type_signature.parameter[2].member
  assert data_type.malicious == tff.SequenceType(np.int32)
  assert process.next.type_signature.result == inner.next.type_signature.result
  assert process.initialize.type_signature == inner.initialize.type_signature


@pytest.mark.parametrize('attack,transform', [
    ('sign_flip', lambda u: -3.0 * u),
    ('scaled', lambda u: 3.0 * u),
])
def test_update_attacks_change_only_malicious_clients(inner, weights, attack, transform):
  datasets = _datasets()
  honest = inner.next(inner.initialize(), [weights] * 3, datasets)
  out = _run_attacked(inner, weights, attack, [0, 1, 0], [0, 0, 0], datasets, scale=3.0)
  got, ref = _updates(out.result), _updates(honest.result)
  np.testing.assert_allclose(got[0], ref[0], atol=1e-7)
  np.testing.assert_allclose(got[1], transform(ref[1]), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(got[2], ref[2], atol=1e-7)
  assert [r.update_weight for r in out.result] == [r.update_weight for r in honest.result]


def test_gaussian_noise_has_the_requested_std_and_follows_the_seed(inner, weights):
  datasets = _datasets()
  honest = _updates(inner.next(inner.initialize(), [weights] * 3, datasets).result)
  out = _updates(_run_attacked(inner, weights, 'gaussian_noise', [1, 1, 1], [7, 7, 8], datasets,
                               noise_std=2.0).result)
  noise = [o - h for o, h in zip(out, honest)]
  np.testing.assert_allclose(noise[0], noise[1], atol=1e-6)  # Same seed, same noise.
  assert not np.allclose(noise[0], noise[2])
  pooled = np.concatenate(noise)  # 3 x 15 draws of N(0, 4): sample std within ~4 standard errors.
  assert abs(pooled.std() - 2.0) < 4 * 2.0 / np.sqrt(2 * pooled.size)


def test_label_flip_trains_malicious_clients_on_flipped_labels(inner, weights):
  datasets = _datasets()
  flipped = [datasets[0], attacks.flip_labels(datasets[1], NUM_CLASSES), datasets[2]]
  reference = _updates(inner.next(inner.initialize(), [weights] * 3, flipped).result)
  got = _updates(_run_attacked(inner, weights, 'label_flip', [0, 1, 0], [0, 0, 0], datasets).result)
  for g, r in zip(got, reference):
    np.testing.assert_allclose(g, r, atol=1e-6)


def test_flip_labels_on_tuples_and_dicts():
  ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 1), np.float32), np.array([0, 1, 2, 9], np.int64)))
  assert [int(y) for _, y in attacks.flip_labels(ds, 10)] == [9, 8, 7, 0]
  ds = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=np.zeros((2, 1)), label=np.array([0, 3])))
  assert [int(e['label']) for e in attacks.flip_labels(ds, 4)] == [3, 0]
  with pytest.raises(ValueError, match='label_key'):
    attacks.flip_labels(ds, 4, label_key='target')


def test_choose_byzantine_is_reproducible_and_sized():
  ids = [f'client_{i}' for i in range(10)]
  chosen = attacks.choose_byzantine(ids, 0.2, seed=1, round_num=3)
  assert len(chosen) == 2 and chosen <= set(ids)
  assert chosen == attacks.choose_byzantine(list(reversed(ids)), 0.2, seed=1, round_num=3)
  rounds = {frozenset(attacks.choose_byzantine(ids, 0.2, seed=1, round_num=r)) for r in range(20)}
  assert len(rounds) > 1  # Different rounds pick different clients.
  assert attacks.choose_byzantine(ids, 0.0, 1, 0) == set()
  assert len(attacks.choose_byzantine(ids, 0.25, 1, 0)) == 2  # floor: never more than the fraction.
  with pytest.raises(ValueError, match='byzantine_fraction'):
    attacks.choose_byzantine(ids, 1.5, 1, 0)


def test_bad_attack_arguments(inner):
  with pytest.raises(ValueError, match='--attack must be one of'):
    attacks.build_attacked_client_work(inner, 'poison')
  with pytest.raises(ValueError, match='num_classes'):
    attacks.build_attacked_client_work(inner, 'label_flip')


def test_composes_into_our_fed_avg_where_median_resists_sign_flip(inner):
  # Our algorithms' composer (tff.learning.templates.compose_learning_process underneath) takes the wrapped work.
  attacked = attacks.build_attacked_client_work(inner, 'sign_flip', scale=10.0)
  processes = {name: fed_avg.compose(_model_fn, attacked, tff.learning.optimizers.build_sgdm(1.0), factory)
               for name, factory in (('mean', agg.mean()), ('median', agg.median()))}
  initial_fn = fed_avg.initial_weights_computation(_model_fn)
  datasets = _datasets(5)  # Equal sizes: equal example weights.
  data = [attacks.attacked_client_data(d, m) for d, m in zip(datasets, [1, 0, 0, 0, 0])]
  initial = initial_fn()
  honest = np.stack(_updates(inner.next(inner.initialize(), [initial] * 5, datasets).result))
  sent = honest.copy()
  sent[0] *= -10.0

  def step(process):
    state = process.initialize()
    after = process.get_model_weights(process.next(state, data).state)
    return np.concatenate([np.ravel(w) for w in after.trainable]) - np.concatenate(
        [np.ravel(w) for w in process.get_model_weights(state).trainable])

  mean_step, median_step = step(processes['mean']), step(processes['median'])
  # The finalizer applies weights - 1.0 * aggregate(update); updates are initial - trained weights.
  np.testing.assert_allclose(mean_step, -sent.mean(0), atol=1e-6)
  np.testing.assert_allclose(median_step, -np.median(sent, axis=0), atol=1e-6)
  honest_step = -honest.mean(0)
  assert np.linalg.norm(median_step - honest_step) < 0.5 * np.linalg.norm(mean_step - honest_step)
