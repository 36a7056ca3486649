"""DP aggregators vs stock FedAvg, numpy clipping, the Gaussian noise law and Andrew et al.'s clip update."""

import dp_accounting
import numpy as np
import pytest
from scipy import stats
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.aggregators import privacy

NUM_FEATURES, NUM_CLASSES = 3, 2


def model_fn():
  keras_model = tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(NUM_FEATURES,)),
      tf.keras.layers.Dense(NUM_CLASSES, kernel_initializer='glorot_uniform'),
  ])
  return tff.learning.models.from_keras_model(
      keras_model, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      input_spec=(tf.TensorSpec([None, NUM_FEATURES], tf.float32), tf.TensorSpec([None], tf.int32)))


def _federated_data(num_clients=3):
  rng = np.random.default_rng(0)
  datasets = []
  for _ in range(num_clients):
    x = rng.normal(size=(8, NUM_FEATURES)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=8).astype(np.int32)
    datasets.append(tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
  return datasets


def _initial_weights():
  rng = np.random.default_rng(1)
  return tff.learning.models.ModelWeights(
      trainable=[rng.normal(size=(NUM_FEATURES, NUM_CLASSES)).astype(np.float32),
                 np.zeros(NUM_CLASSES, np.float32)], non_trainable=[])


def _train(aggregator, rounds=2):
  process = tff.learning.algorithms.build_unweighted_fed_avg(
      model_fn, tff.learning.optimizers.build_sgdm(learning_rate=0.5),
      tff.learning.optimizers.build_sgdm(learning_rate=1.0), model_aggregator=aggregator)
  state = process.set_model_weights(process.initialize(), _initial_weights())
  data = _federated_data()
  for _ in range(rounds):
    state = process.next(state, data).state
  return process.get_model_weights(state).trainable


@pytest.fixture(scope='module')
def fed_avg_weights():
  return _train(None)


@pytest.mark.parametrize('dp', ['fixed', 'adaptive', 'tree'])
def test_no_noise_and_large_clip_equals_fed_avg(dp, fed_avg_weights):
  specs = privacy.model_trainable_specs(model_fn)
  aggregator = privacy.build_dp_aggregator(dp, 0.0, clip_norm=1e3, clients_per_round=3, record_specs=specs,
                                          tree_restart_rounds=2)
  dp_weights = _train(aggregator)
  assert np.abs(fed_avg_weights[0] - _initial_weights().trainable[0]).max() > 1e-2  # Training moved the model.
  for a, b in zip(dp_weights, fed_avg_weights):
    np.testing.assert_allclose(a, b, atol=1e-6)


def _tree_outputs(restart_rounds, rounds=3, seed=7):
  specs = tf.TensorSpec([4], tf.float32)
  factory = privacy.build_dp_aggregator('tree', 1.0, 1.0, 2, record_specs=specs, noise_seed=seed,
                                        tree_restart_rounds=restart_rounds)
  process = factory.create(tff.TensorType(np.float32, [4]))
  state, outputs = process.initialize(), []
  for _ in range(rounds):
    out = process.next(state, [np.zeros(4, np.float32)] * 2)
    state = out.state
    outputs.append(np.asarray(out.result))
  return outputs


def test_tree_restarts_exactly_after_each_epoch():
  restart_after_2, restart_after_3 = _tree_outputs(2), _tree_outputs(3)
  for r in (0, 1):  # Same seed, same tree for the first two rounds...
    np.testing.assert_array_equal(restart_after_2[r], restart_after_3[r])
  assert np.all(restart_after_2[0] != 0)
  # ...then the first releases round 3 from a fresh tree: fresh leaf noise, no residual subtraction.
  assert not np.allclose(restart_after_2[2], restart_after_3[2])


def test_fixed_clipping_and_noise_std_match_numpy_and_chi_square():
  z, clip, cohort, dim, runs = 1.0, 0.5, 4, 500, 4
  factory = privacy.build_dp_aggregator('fixed', z, clip, cohort)
  process = factory.create(tff.TensorType(np.float32, [dim]))
  rng = np.random.default_rng(2)
  directions = rng.normal(size=(cohort, dim))
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  values = (directions * np.array([[0.2], [0.4], [1.0], [2.0]])).astype(np.float32)  # Two norms exceed clip.
  clipped = values * np.minimum(1.0, clip / np.linalg.norm(values, axis=1, keepdims=True))
  expected_mean = clipped.sum(axis=0) / cohort
  state, noise = process.initialize(), []
  for _ in range(runs):
    out = process.next(state, list(values))
    state = out.state
    noise.append(np.asarray(out.result) - expected_mean)
  noise = np.stack(noise)
  sigma = z * clip / cohort
  stat = np.sum(noise**2) / sigma**2  # chi2(runs * dim) if the noise is iid N(0, sigma^2).
  assert stats.chi2.ppf(1e-4, noise.size) < stat < stats.chi2.ppf(1 - 1e-4, noise.size)
  assert abs(noise.mean()) < 5 * sigma / np.sqrt(noise.size)  # Centred, so the clipped mean is right.
  assert not np.allclose(noise[0], noise[1])  # Fresh noise each round.
  event = tff.aggregators.differential_privacy.extract_dp_event_from_state(state)
  assert event == dp_accounting.GaussianDpEvent(z)


def _clip_trajectory(target, initial_clip, norms, rounds):
  factory = privacy.build_dp_aggregator('adaptive', 0.0, initial_clip, len(norms),
                                        target_unclipped_quantile=target)
  process = factory.create(tff.TensorType(np.float32, [2]))
  values = [np.array([n, 0.0], np.float32) for n in norms]
  state, clips = process.initialize(), [initial_clip]
  for _ in range(rounds):
    out = process.next(state, values)
    state = out.state
    clips.append(float(out.measurements['dp_query_metrics']['clip']))
  return np.array(clips)


def _andrew_et_al_reference(target, initial_clip, norms, rounds, lr=0.2):
  """Geometric update of Andrew et al. (2021), noise-free: C <- C * exp(-lr * (frac(norms <= C) - target))."""
  clips = [initial_clip]
  for _ in range(rounds):
    below = np.mean(np.asarray(norms) <= clips[-1])
    clips.append(clips[-1] * np.exp(-lr * (below - target)))
  return np.array(clips)


@pytest.mark.parametrize('target, initial_clip', [(0.5, 0.1), (0.9, 50.0)])
def test_adaptive_clip_moves_to_target_quantile(target, initial_clip):
  norms = 0.5 + np.arange(10.0)  # 0.5, 1.5, ..., 9.5
  rounds = 60
  clips = _clip_trajectory(target, initial_clip, norms, rounds)
  np.testing.assert_allclose(clips, _andrew_et_al_reference(target, initial_clip, norms, rounds), rtol=1e-4)
  final_unclipped = np.mean(norms <= clips[-1])
  assert abs(final_unclipped - target) <= 0.1 + 1e-9
  assert abs(clips[-1] - np.quantile(norms, target)) < abs(initial_clip - np.quantile(norms, target)) / 5


def test_adaptive_dp_event_is_equivalent_to_total_noise_multiplier():
  z, cohort, q = 1.0, 40, 0.01
  process = privacy.build_dp_aggregator('adaptive', z, 1.0, cohort).create(tff.TensorType(np.float32, [3]))
  state = process.next(process.initialize(), [np.ones(3, np.float32)] * cohort).state
  event = tff.aggregators.differential_privacy.extract_dp_event_from_state(state)
  assert isinstance(event, dp_accounting.ComposedDpEvent)  # Value noise + clipped-count noise.
  multipliers = [float(e.noise_multiplier) for e in event.events]
  assert sum(m**-2 for m in multipliers)**-0.5 == pytest.approx(z, rel=1e-6)
  # TFF stores np.float32 multipliers; dp-accounting 0.4.3 only treats Python floats as Gaussians inside a
  # ComposedDpEvent (it silently keeps the first one), so the event is rebuilt with Python floats.
  composed = dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(m) for m in multipliers])
  eps = [dp_accounting.rdp.RdpAccountant().compose(
      dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(q, e), 100)).get_epsilon(1e-5)
         for e in (composed, dp_accounting.GaussianDpEvent(z))]
  assert eps[0] == pytest.approx(eps[1], rel=1e-5)


def test_secure_distributed_dp_uses_secure_sum_and_averages():
  factory = privacy.build_dp_aggregator('fixed', 0.0, clip_norm=1.0, clients_per_round=3, secure_bits=16)
  process = factory.create(tff.TensorType(np.float32, [8]))
  text = process.next.to_building_block().compact_representation()
  assert 'federated_secure_sum_bitwidth' in text
  for insecure in ('federated_sum', 'federated_mean', 'federated_aggregate', 'federated_collect'):
    assert insecure not in text  # Nothing leaves the clients in the clear.
  # TFF's C++ runtime has no secure intrinsics; simulate them as TFF's test backend does.
  simulated_next = tff.backends.test.replace_secure_intrinsics_with_bodies(process.next)
  rng = np.random.default_rng(3)
  values = [(v / np.linalg.norm(v) * 0.8).astype(np.float32) for v in rng.normal(size=(3, 8))]
  result = np.asarray(simulated_next(process.initialize(), values)['result'])
  np.testing.assert_allclose(result, np.mean(values, axis=0), atol=2e-3)  # Quantization error only.


@pytest.mark.parametrize('kwargs, match', [
    (dict(dp='laplace'), 'dp must be one of none|fixed|adaptive|tree'),
    (dict(noise_multiplier=-1.0), 'noise_multiplier'),
    (dict(clip_norm=0.0), 'clip_norm'),
    (dict(clients_per_round=0), 'clients_per_round'),
    (dict(dp='adaptive', target_unclipped_quantile=1.5), 'target_unclipped_quantile'),
    (dict(dp='adaptive', noise_multiplier=1.0, clients_per_round=5), 'noise_multiplier must be <'),
    (dict(dp='tree'), 'record_specs'),
    (dict(dp='tree', record_specs=[tf.TensorSpec([2])]), 'tree_restart_rounds'),
    (dict(dp='tree', secure_bits=16), 'secure_bits composes only'),
    (dict(secure_bits=30), 'secure_bits must be an integer'),
])
def test_bad_flags_raise_one_line_value_error(kwargs, match):
  args = dict(dp='fixed', noise_multiplier=1.0, clip_norm=1.0, clients_per_round=20)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match) as info:
    privacy.build_dp_aggregator(**args)
  assert '\n' not in str(info.value)


def test_none_returns_no_aggregator():
  assert privacy.build_dp_aggregator('none', 0.0, 1.0, 10) is None
