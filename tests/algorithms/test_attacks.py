"""Attacks on the engine: each malicious update vs numpy local SGD, label flipping vs numpy on flipped labels,
malicious clients chosen among the sampled and only reporters attacking, SCAFFOLD + attack, median vs mean."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import aggregators as agg
from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import attacks
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import scaffold
from tff_fl.models import keras_models

from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py

NUM_CLASSES, DIM, N, BATCH, LR = 3, 4, 8, 4, 0.1
SPEC = collections.OrderedDict(x=tf.TensorSpec([DIM], tf.float32), y=tf.TensorSpec([], tf.int32))
MODEL_FN = keras_models.build_tff_model_fn(lambda: keras_models.logreg([DIM], NUM_CLASSES), SPEC)
SEED = 5


def _arrays(n_clients=3):
  rng = np.random.default_rng(0)
  return {str(i): (rng.normal(size=(N, DIM)).astype(np.float32), rng.integers(0, NUM_CLASSES, N).astype(np.int32))
          for i in range(n_clients)}


W0 = [np.random.default_rng(1).normal(size=(DIM, NUM_CLASSES)).astype(np.float32) * 0.3,
      np.random.default_rng(2).normal(size=NUM_CLASSES).astype(np.float32) * 0.1]


def _numpy_update(x, y, lr=LR):
  """initial - final weights of local SGD over batches of BATCH in order (flattened [W, b])."""
  w, b = W0[0].astype(np.float64), W0[1].astype(np.float64)
  for lo in range(0, len(y), BATCH):
    _, gw, gb = logreg_loss_and_grads(w, b, x[lo:lo + BATCH], y[lo:lo + BATCH])
    w, b = w - lr * gw, b - lr * gb
  return np.concatenate([(W0[0] - w).ravel(), W0[1] - b])


def _flat(weights):
  return np.concatenate([np.ravel(w) for w in weights.trainable])


def _process(arrays, extension, algorithm=None, **kwargs):
  kwargs.setdefault('server_optimizer', tff.learning.optimizers.build_sgdm(1.0))
  p = engine.build_process(algorithm or fed_avg.FedAvg(), MODEL_FN, arrays, lambda cid, r: np.arange(N),
                           batch_size=BATCH, client_optimizer=tff.learning.optimizers.build_sgdm(LR), seed=SEED,
                           extensions=[extension], **kwargs)
  state = p.set_model_weights(p.initialize(), tff.learning.models.ModelWeights(W0, []))
  return p, state


def _per_client_updates(p, state, round_num, ids, ext=None):
  """Each client's update (initial - new weights of a one-client round at server SGD lr 1), the cohort sampled
  being all of `ids`; with `ext`, also the malicious flags it packed for each round."""
  out, flags = [], []
  for cid in ids:
    new = p.next(state, engine.Cohort(round_num, (cid,), sampled=tuple(ids))).state
    out.append(_flat(p.get_model_weights(state)) - _flat(p.get_model_weights(new)))
    flags.append(ext and list(ext.last_malicious))
  return (out, flags) if ext else out


@pytest.mark.parametrize('attack', ['sign_flip', 'gaussian_noise', 'label_flip'])  # scaled: below, same stage.
def test_malicious_clients_attack_honest_ones_do_not(attack):
  arrays = _arrays(6)
  ids = sorted(arrays)
  ext = attacks.ByzantineAttack(attack, 0.5, seed=3, scale=3.0, noise_std=2.0, num_classes=NUM_CLASSES)
  p, state = _process(arrays, ext)
  round_num = 4
  bad = attacks.choose_byzantine(ids, 0.5, 3, round_num)  # Three of the six sampled clients.
  got, flags = _per_client_updates(p, state, round_num, ids, ext)
  assert flags == [[cid in bad] for cid in ids]  # Chosen among the sampled; flags of the reporting client only.
  noise = []
  for cid, update in zip(ids, got):
    x, y = arrays[cid]
    honest = _numpy_update(x, y)
    if cid not in bad:
      np.testing.assert_allclose(update, honest, rtol=1e-5, atol=1e-6)
    elif attack == 'sign_flip':
      np.testing.assert_allclose(update, -3.0 * honest, rtol=1e-5, atol=1e-6)
    elif attack == 'label_flip':
      np.testing.assert_allclose(update, _numpy_update(x, NUM_CLASSES - 1 - y), rtol=1e-5, atol=1e-6)
      assert not np.allclose(update, honest, atol=1e-3)
    else:  # N(0, 2^2) drawn statelessly from the client's round seed, leaf by leaf.
      seed = tasks.derived_seed(SEED, round_num, cid)
      expected = np.concatenate([tf.random.stateless_normal(shape, seed=[seed, i]).numpy().ravel() * 2.0
                                 for i, shape in enumerate([(DIM, NUM_CLASSES), (NUM_CLASSES,)])])
      np.testing.assert_allclose(update - honest, expected, atol=1e-5)
      noise.append(update - honest)
  if attack == 'gaussian_noise':
    assert not np.allclose(noise[0], noise[1])  # Each client its own seed.
    pooled = np.concatenate(noise)  # 3 x 15 draws of N(0, 4): sample std within ~4 standard errors.
    assert abs(pooled.std() - 2.0) < 4 * 2.0 / np.sqrt(2 * pooled.size)


def test_malicious_chosen_among_sampled_and_only_reporters_attack():
  sampled = tuple(f'c{i}' for i in range(10))
  ext = attacks.ByzantineAttack('sign_flip', 0.4, seed=1, scale=10.0)
  for round_num in (1, 2, 3):
    bad = attacks.choose_byzantine(sampled, 0.4, 1, round_num)
    assert len(bad) == 4
    reporters = sampled[::2]  # Half the cohort dropped out: flags follow the reporters, chosen among the sampled.
    fields = ext.fields(round_num, list(reporters), list(sampled))
    assert list(fields['malicious']) == [int(c in bad) for c in reporters] == [int(m) for m in ext.last_malicious]
    assert ext.last_round == round_num


def test_scaffold_with_sign_flip_attacks_the_update_not_the_control_variates():
  # Round 1: c = c_i = 0, so SCAFFOLD's local work is plain SGD. The model moves by the uniform mean of the sent
  # (attacked) updates; c by (1/N) sum_i dc_i, dc_i = honest update / (K lr) (the upload is not attacked).
  arrays, ids = _arrays(), ('0', '1', '2')
  ext = attacks.ByzantineAttack('sign_flip', 1 / 3, seed=3, scale=10.0)
  p, state = _process(arrays, ext, scaffold.Scaffold(LR, num_clients=3),
                      client_weighting=tff.learning.ClientWeighting.UNIFORM)
  out = p.next(state, engine.Cohort.full(1, ids))
  (bad,) = attacks.choose_byzantine(ids, 1 / 3, 3, 1)
  honest = {c: _numpy_update(*arrays[c]) for c in ids}
  sent = [-10.0 * honest[c] if c == bad else honest[c] for c in ids]
  np.testing.assert_allclose(_flat(p.get_model_weights(state)) - _flat(p.get_model_weights(out.state)),
                             np.mean(sent, axis=0), rtol=1e-5, atol=1e-6)
  steps = N // BATCH
  c = np.concatenate([np.ravel(v) for v in out.state['extra']])
  np.testing.assert_allclose(c, sum(honest.values()) / (steps * LR) / 3, rtol=1e-5, atol=1e-6)
  stored = p.client_states([bad])[0]
  np.testing.assert_allclose(stored, honest[bad] / (steps * LR), rtol=1e-5, atol=1e-6)


def test_median_resists_sign_flip_where_mean_does_not():
  arrays = _arrays(5)  # Equal sizes: equal example weights.
  ids = tuple(sorted(arrays))
  (bad,) = attacks.choose_byzantine(ids, 0.2, 0, 1)
  honest = np.stack([_numpy_update(*arrays[c]) for c in ids])
  sent = honest.copy()
  sent[ids.index(bad)] *= -10.0
  p, state = _process(arrays, attacks.ByzantineAttack('sign_flip', 0.2, seed=0, scale=10.0),
                      model_aggregator=agg.median())
  after = p.next(state, engine.Cohort.full(1, ids)).state
  median_step = _flat(p.get_model_weights(after)) - _flat(p.get_model_weights(state))
  np.testing.assert_allclose(median_step, -np.median(sent, axis=0), rtol=1e-5, atol=1e-6)
  honest_step, mean_step = -honest.mean(0), -sent.mean(0)  # The engine's mean of sent updates: tests above.
  assert np.linalg.norm(median_step - honest_step) < 0.5 * np.linalg.norm(mean_step - honest_step)


def test_update_transforms_match_numpy():
  update = [np.arange(6, dtype=np.float32).reshape(2, 3) - 2.0, np.array([0.5, -1.0], np.float32)]
  for attack, factor in (('sign_flip', -3.0), ('scaled', 3.0)):
    out = attacks.attack_update([tf.constant(u) for u in update], attack, 3.0, 1.0, 0)
    for o, u in zip(out, update):
      np.testing.assert_allclose(o.numpy(), factor * u, rtol=1e-6)
  out = attacks.attack_update([tf.constant(u) for u in update], 'label_flip', 3.0, 1.0, 0)
  for o, u in zip(out, update):
    np.testing.assert_array_equal(o.numpy(), u)  # label_flip leaves the update alone.


def test_choose_byzantine_is_reproducible_and_sized():
  ids = [f'client_{i}' for i in range(10)]
  chosen = attacks.choose_byzantine(ids, 0.2, seed=1, round_num=3)
  assert len(chosen) == 2 and chosen <= set(ids)
  assert chosen == attacks.choose_byzantine(list(reversed(ids)), 0.2, seed=1, round_num=3)
  rounds = {frozenset(attacks.choose_byzantine(ids, 0.2, seed=1, round_num=r)) for r in range(20)}
  assert len(rounds) > 1  # Different rounds pick different clients.
  assert attacks.choose_byzantine(ids, 0.0, 1, 0) == set()
  # 2.5 expected: 2 or 3, stochastically rounded so the mean count over rounds is the fraction's.
  counts = [len(attacks.choose_byzantine(ids, 0.25, 1, r)) for r in range(400)]
  assert set(counts) == {2, 3} and abs(np.mean(counts) - 2.5) < 4 * 0.5 / np.sqrt(400)
  small = [len(attacks.choose_byzantine(ids[:3], 0.2, 1, r)) for r in range(400)]  # 0.6 expected: 0 or 1.
  assert set(small) == {0, 1} and abs(np.mean(small) - 0.6) < 4 * 0.49 / np.sqrt(400)
  with pytest.raises(ValueError, match='byzantine_fraction'):
    attacks.choose_byzantine(ids, 1.5, 1, 0)


def test_flip_labels_on_any_label_shape():
  np.testing.assert_array_equal(attacks.flip_labels(tf.constant([0, 1, 2, 9], tf.int64), 10).numpy(), [9, 8, 7, 0])
  np.testing.assert_array_equal(attacks.flip_labels(tf.constant([[0, 3]]), 4).numpy(), [[3, 0]])


def test_bad_attack_arguments():
  with pytest.raises(ValueError, match='attack must be one of sign_flip'):
    attacks.ByzantineAttack('poison', 0.2, 0)
  with pytest.raises(ValueError, match='num_classes'):
    attacks.ByzantineAttack('label_flip', 0.2, 0)
  with pytest.raises(ValueError, match='byzantine_fraction'):
    attacks.ByzantineAttack('scaled', -0.1, 0)
  with pytest.raises(ValueError, match='noise_std'):
    attacks.ByzantineAttack('gaussian_noise', 0.1, 0, noise_std=-1.0)
