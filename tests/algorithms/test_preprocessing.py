"""Client preprocessing on the engine vs numpy: training on per-client normalised, truncated data; training on
augmented examples (seeded per client, round and stream position, whatever the batch); the example order of
shuffle/take; evaluation arrays with the client's own normalisation and no augmentation."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import preprocessing
from tff_fl.data import augment_spec
from tff_fl.data import preprocess

from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py

BATCH, EPOCHS, LR, SEED = 10, 2, 0.05, 0


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(num_clients=4, model='logreg', partition='iid', seed=1))


def _weights():
  rng = np.random.default_rng(4)
  return [rng.normal(size=(64, 10)).astype(np.float32) * 0.1, np.zeros(10, np.float32)]


def _numpy_update(x, y):
  """initial - final [W, b] (flattened) of local SGD over batches of BATCH in order."""
  w, b = (v.astype(np.float64) for v in _weights())
  for lo in range(0, len(y), BATCH):
    _, gw, gb = logreg_loss_and_grads(w, b, x[lo:lo + BATCH], y[lo:lo + BATCH])
    w, b = w - LR * gw, b - LR * gb
  w0, b0 = _weights()
  return np.concatenate([(w0 - w).ravel(), b0 - b])


def _order(task, cid, round_num):
  return task.train_order(cid, epochs=EPOCHS, seed=SEED, round_num=round_num)


def _extension(task, client_preprocess, augment):
  return preprocessing.ClientPreprocessing(preprocess.PreprocessSpec.from_flags(client_preprocess, augment),
                                           task.data.train, seed=SEED, epochs=EPOCHS, batch_size=BATCH)


def _round_step(task, ext, cohort, round_num):
  """The model step of one round (server SGD lr 1, example-weighted mean of the client updates)."""
  p = engine.build_process(fed_avg.FedAvg(), task.model_fn, task.data.train, lambda c, r: _order(task, c, r),
                           batch_size=BATCH, client_optimizer=tff.learning.optimizers.build_sgdm(LR), seed=SEED,
                           extensions=[ext], num_slots=2)
  state = p.set_model_weights(p.initialize(), tff.learning.models.ModelWeights(_weights(), []))
  out = p.next(state, engine.Cohort.full(round_num, cohort))
  flat = lambda s: np.concatenate([np.ravel(w) for w in p.get_model_weights(s).trainable])
  return flat(state) - flat(out.state), out


def test_trains_on_client_normalised_truncated_data(task):
  ext = _extension(task, 'normalize(client),take(3)', '')
  cohort = task.client_ids[:3]
  step, out = _round_step(task, ext, cohort, round_num=2)
  updates, sizes = [], []
  for cid in cohort:
    x, y = task.data.train[cid]
    xt = x.astype(np.float64)
    order = _order(task, cid, 2)[:3 * BATCH]  # take(3): the first 3 batches of the round's E epochs.
    updates.append(_numpy_update((x[order] - xt.mean()) / xt.std(), y[order]))
    sizes.append(len(order))
  np.testing.assert_allclose(step, np.average(updates, axis=0, weights=sizes), rtol=2e-4, atol=1e-6)
  assert [c['num_examples'] for c in out.client_metrics] == sizes


def test_trains_on_augmented_examples_seeded_by_stream_position(task):
  ext = _extension(task, 'normalize(0.5,0.25)', 'flip,brightness(0.3)')
  cohort = task.client_ids[1:3]
  step, _ = _round_step(task, ext, cohort, round_num=3)
  ops = augment_spec.parse_augment('flip,brightness(0.3)')
  updates, sizes = [], []
  for cid in cohort:  # The whole round stream augmented at once: batching must not change any example's draw.
    x, y = task.data.train[cid]
    order = _order(task, cid, 3)
    seed = tasks.derived_seed(SEED, 3, cid)
    stream = tf.function(lambda s, seed=seed: preprocess.augment_batch(s, ops, seed, 0))(x[order]).numpy()
    assert not np.allclose(stream, x[order])
    updates.append(_numpy_update((stream.astype(np.float64) - 0.5) / 0.25, y[order]))
    sizes.append(len(order))
  np.testing.assert_allclose(step, np.average(updates, axis=0, weights=sizes), rtol=2e-4, atol=1e-6)


def test_shuffle_buffer_and_take_order(task):
  ext = _extension(task, 'shuffle(4),take(5)', '')
  cid = task.client_ids[0]
  n = len(task.data.train[cid][1])
  order = ext.client_order(cid, 1, _order(task, cid, 1))
  assert len(order) == 5 * BATCH and np.all(order < np.arange(len(order)) + 4)  # Within the buffer's reach.
  full = _extension(task, 'shuffle(4)', '').client_order(cid, 1, _order(task, cid, 1))
  assert len(full) == EPOCHS * n and all(sorted(e) == list(range(n)) for e in full.reshape(EPOCHS, n))
  np.testing.assert_array_equal(full[:5 * BATCH], order)
  assert not np.array_equal(full, _extension(task, 'shuffle(4)', '').client_order(cid, 2, _order(task, cid, 2)))
  plain = _order(task, cid, 1)
  np.testing.assert_array_equal(_extension(task, 'take(2)', '').client_order(cid, 1, plain), plain[:2 * BATCH])
  assert not _extension(task, 'normalize(client)', 'flip').has('client_order')


def test_eval_arrays_use_the_clients_training_normalisation_and_no_augmentation(task):
  ext = _extension(task, 'normalize(client)', 'flip,brightness(0.5)')
  arrays = ext.eval_arrays(task.data.test)
  assert sorted(arrays) == sorted(task.client_ids)
  for cid in task.client_ids:
    x_train = task.data.train[cid][0].astype(np.float64)
    x_test, y_test = task.data.test[cid]
    np.testing.assert_allclose(arrays[cid][0], (x_test - x_train.mean()) / x_train.std(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(arrays[cid][1], y_test)
  assert _extension(task, 'take(2)', 'flip').eval_arrays(task.data.test) is None
  fields = ext.fields(1, task.client_ids[:2], task.client_ids)
  np.testing.assert_allclose(fields['mean'], [task.data.train[c][0].mean() for c in task.client_ids[:2]], rtol=1e-5)


def test_refuses_augmentation_of_non_images():
  task = tasks.build_task(tasks.TaskConfig(task='synthetic', model='logreg', num_clients=3))
  with pytest.raises(ValueError, match=r'--augment needs image examples \[H, W, C\]; this task has x of shape'):
    _extension(task, '', 'flip')
