"""Federated magnitude pruning (the `Pruning` extension on the engine) vs tfmot: schedule per round, mask rule,
masks held through local training, aggregation and the server step, for FedAvg and composed with SCAFFOLD / FedNova."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_impl

from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import fednova
from tff_fl.algorithms import local_training
from tff_fl.algorithms import pruning
from tff_fl.algorithms import scaffold


@pytest.mark.parametrize('kwargs, fragment', [
    (dict(name='cubic'), '--pruning_schedule must be one of none, constant, polynomial'),
    (dict(name='constant', final_sparsity=1.0), '--final_sparsity must be in [0, 1)'),
    (dict(name='polynomial', initial_sparsity=-0.1, end_round=5), '--initial_sparsity must be in [0, 1)'),
    (dict(name='polynomial', begin_round=3, end_round=3), '--pruning_end_round must be > --pruning_begin_round'),
    (dict(name='constant', begin_round=3, end_round=2), '--pruning_end_round must be -1'),
    (dict(name='constant', frequency=0), '--pruning_frequency must be >= 1'),
])
def test_bad_schedule_flags(kwargs, fragment):
  name = kwargs.pop('name')
  with pytest.raises(ValueError) as err:
    pruning.build_schedule(name, **kwargs)
  assert fragment in str(err.value) and '\n' not in str(err.value)


def test_magnitude_mask_matches_tfmot_update_mask():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(13, 7)).astype(np.float32)
  w[0, :4] = 0.5  # Ties.
  w[1, :5] = 0.0  # Already-pruned zeros.
  var = tf.Variable(w)
  for s in (0.0, 0.3, 0.5, 0.9, 0.99):
    ref = pruning_impl.Pruning(lambda: tf.constant(1, tf.int64), [(var, None, None)],
                               tfmot.sparsity.keras.ConstantSparsity(s, 0), (1, 1), 'AVG')
    _, ref_mask = ref._update_mask(var)  # pylint: disable=protected-access
    np.testing.assert_array_equal(pruning.magnitude_mask(tf.constant(w), tf.constant(s)).numpy(), ref_mask.numpy())


def test_mask_matching_masks_every_part_shaped_like_the_weights():
  masks = [tf.constant([[1.0, 0.0]]), tf.constant([0.0, 1.0, 1.0])]
  delta = [tf.constant([[2.0, 3.0]]), tf.constant([4.0, 5.0, 6.0])]
  got = pruning.mask_matching(delta, masks)
  assert [t.numpy().tolist() for t in got] == [[[2.0, 0.0]], [0.0, 5.0, 6.0]]
  nova = collections.OrderedDict(normalized=delta, steps=tf.constant(3.0))  # FedNova's aggregate.
  got = pruning.mask_matching(nova, masks)
  assert got['normalized'][0].numpy().tolist() == [[2.0, 0.0]] and float(got['steps']) == 3.0


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(num_clients=4, model='logreg'))


def test_local_training_under_masks_keeps_pruned_weights_zero(task):
  init = task.initial_weights(0)
  rng = np.random.default_rng(1)
  masks = [(rng.uniform(size=init.trainable[0].shape) > 0.6).astype(np.float32), np.ones(10, np.float32)]
  start = tff.learning.models.ModelWeights(trainable=[init.trainable[0] * masks[0], init.trainable[1]],
                                           non_trainable=[])
  model = task.model_fn()
  data = task.train_dataset(task.client_ids[0], epochs=3, batch_size=5, seed=0, round_num=1)

  @tf.function
  def run():
    return local_training.train(model, tff.learning.optimizers.build_sgdm(0.5, momentum=0.9), start, data,
                                proximal_mu=0.1, options=local_training.LocalOptions(masks=[tf.constant(m)
                                                                                            for m in masks]))

  delta = run()['update'][0].numpy()
  assert np.all(delta[masks[0] == 0] == 0.0)
  assert np.count_nonzero(delta[masks[0] == 1]) > 0.9 * masks[0].sum()  # The kept weights did train.


def _process(task, algorithm, schedule, **kwargs):
  return engine.build_task_process(algorithm, task, epochs=1, batch_size=10, seed=0,
                                   client_optimizer=tff.learning.optimizers.build_sgdm(0.1),
                                   extensions=[pruning.Pruning(task.keras_model, schedule)], **kwargs)


def _rounds(process, task, num_rounds, cohort_size=3):
  state = process.set_model_weights(process.initialize(), task.initial_weights(0))
  rounds = []
  for r in range(1, num_rounds + 1):
    out = process.next(state, engine.Cohort.full(r, task.client_ids[(r - 1) % 2:][:cohort_size]))
    state = out.state
    rounds.append((out.metrics, process.get_model_weights(state), pruning.masks_of(state)))
  return state, rounds


@pytest.fixture(scope='module')
def run(task):
  """4 rounds of pruned FedAvg on the engine, prune at rounds 1 and 3 (polynomial 0.2 -> 0.7 over [1, 3], every
  2 rounds), server momentum and a noisy DP aggregator (its noise must not revive pruned weights)."""
  schedule = pruning.build_schedule('polynomial', initial_sparsity=0.2, final_sparsity=0.7, begin_round=1,
                                    end_round=3, frequency=2)
  process = _process(task, fed_avg.FedAvg(), schedule,
                     server_optimizer=tff.learning.optimizers.build_sgdm(1.0, momentum=0.9),
                     model_aggregator=tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
                         noise_multiplier=0.5, clients_per_round=3, clip=1.0))
  state, rounds = _rounds(process, task, 4)
  return schedule, process, state, rounds


def test_sparsity_per_round_follows_tfmot_schedule(run):
  schedule, _, _, rounds = run
  n = 64 * 10
  current, kept = 0.0, n
  for r, (metrics, _, masks) in enumerate(rounds, start=1):
    should, target = (t.numpy() for t in schedule(tf.constant(r, tf.int64)))
    got = metrics['pruning']
    assert got['pruned'] == int(should)
    assert got['target_sparsity'] == pytest.approx(float(target), abs=1e-7)
    if should:
      kept = max(round(n * (1.0 - float(target))), 1)  # tfmot's k.
      current = 1.0 - kept / n
    assert int(masks[0].sum()) == kept
    assert got['sparsity'] == pytest.approx(current, abs=1e-6)
    assert got['layer1_dense_kernel'] == pytest.approx(current, abs=1e-6)
    np.testing.assert_array_equal(masks[1], np.ones(10))  # Biases are not pruned (as tfmot).
  assert [m['pruning']['pruned'] for m, _, _ in rounds] == [1, 0, 1, 0]
  assert current == pytest.approx(0.7)


def test_masks_keep_pruned_weights_exactly_zero_through_aggregation(run):
  _, _, _, rounds = run
  for i, (_, weights, masks) in enumerate(rounds):
    kernel = np.asarray(weights.trainable[0])
    assert np.all(kernel[masks[0] == 0] == 0.0)
    assert np.all(kernel[masks[0] == 1] != 0.0)
    if i and rounds[i][0]['pruning']['pruned'] == 0:
      np.testing.assert_array_equal(masks[0], rounds[i - 1][2][0])  # Masks change only on pruning rounds.
  assert np.all((rounds[2][2][0] <= rounds[1][2][0]))  # Once pruned, stays pruned.


def test_export_is_stripped_savedmodel_with_measured_sparsity(task, run, tmp_path):
  _, process, state, _ = run
  weights = process.get_model_weights(state)
  masks = pruning.masks_of(state)
  info = pruning.export_pruned_model(task.keras_model, weights, masks, str(tmp_path / 'model'))
  loaded = tf.keras.models.load_model(str(tmp_path / 'model'), compile=False)
  assert [type(layer).__name__ for layer in loaded.layers] == ['Flatten', 'Dense']
  kernel, bias = (v.numpy() for v in loaded.trainable_weights)
  assert info['measured_sparsity'] == pytest.approx(np.mean(kernel == 0)) == pytest.approx(1 - masks[0].mean())
  x, _ = task.data.centralized('test')
  np.testing.assert_allclose(loaded(x).numpy(), x.reshape(len(x), -1) @ (np.asarray(weights.trainable[0]) * masks[0])
                             + bias, rtol=1e-5, atol=1e-5)
  assert info['weights_gzip_bytes'] < 0.6 * info['weights_bytes'] and info['export_gzip_bytes'] < info['export_bytes']


@pytest.mark.parametrize('name', ['scaffold', 'fednova'])
def test_composes_with_stateful_and_normalized_algorithms(task, name):
  """SCAFFOLD (control variates, client state) and FedNova (aggregate = normalized + steps) under pruning: pruned
  weights stay exactly 0 while the kept ones train, and the masks are tfmot's at the constant target."""
  algorithm = scaffold.Scaffold(0.1, len(task.client_ids)) if name == 'scaffold' else fednova.FedNova(0.1, 0.5)
  process = _process(task, algorithm, pruning.build_schedule('constant', final_sparsity=0.5, begin_round=1),
                     client_weighting=tff.learning.ClientWeighting.UNIFORM,
                     server_optimizer=tff.learning.optimizers.build_sgdm(1.0, momentum=0.9))
  state, rounds = _rounds(process, task, 3)
  for metrics, weights, masks in rounds:
    kernel = np.asarray(weights.trainable[0])
    assert int(masks[0].sum()) == 320 and metrics['pruning']['sparsity'] == pytest.approx(0.5)
    assert np.all(kernel[masks[0] == 0] == 0.0)
    assert np.all(kernel[masks[0] == 1] != 0.0)
  assert not np.array_equal(np.asarray(rounds[1][1].trainable[0]), np.asarray(rounds[2][1].trainable[0]))
  if name == 'scaffold':  # The clients' control variates were really used (non-zero after a round).
    assert np.abs(np.concatenate([s for s in process.store.get_many(task.client_ids) if s is not None])).max() > 0
