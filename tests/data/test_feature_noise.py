"""NIID-Bench's feature-noise skew: client i's noise std is sigma * i / (n - 1); test data and labels stay clean."""

import numpy as np
import pytest

from tff_fl import tasks
from tff_fl.data import feature_noise


def test_noise_std_per_client_matches_definition():
  n, sigma = 5, 0.4
  xs = [np.full((4000, 7), 0.5, np.float32) for _ in range(n)]
  noisy = feature_noise.add_feature_noise(xs, sigma, seed=0)
  for i, (x, z) in enumerate(zip(xs, noisy)):
    assert z.dtype == np.float32 and z.shape == x.shape
    np.testing.assert_allclose(np.std(z - x), sigma * i / (n - 1), rtol=0.03, atol=1e-7)
    assert abs(np.mean(z - x)) < 0.01
  np.testing.assert_array_equal(noisy[0], xs[0])  # Client 0 is clean.
  again = feature_noise.add_feature_noise(xs, sigma, seed=0)
  assert all(np.array_equal(a, b) for a, b in zip(noisy, again))
  other = feature_noise.add_feature_noise(xs, sigma, seed=1)
  assert not np.array_equal(noisy[1], other[1])


def test_task_adds_noise_to_training_inputs_only():
  cfg = dict(task='digits', model='logreg', num_clients=4, partition='iid', seed=0)
  clean = tasks.build_task(tasks.TaskConfig(**cfg))
  noisy = tasks.build_task(tasks.TaskConfig(**cfg, feature_noise=0.3))
  stds = []
  for c in clean.client_ids:
    np.testing.assert_array_equal(clean.data.test[c][0], noisy.data.test[c][0])
    np.testing.assert_array_equal(clean.data.train[c][1], noisy.data.train[c][1])
    stds.append(float(np.std(noisy.data.train[c][0] - clean.data.train[c][0])))
  np.testing.assert_allclose(stds, [0.0, 0.1, 0.2, 0.3], rtol=0.05, atol=1e-7)


@pytest.mark.parametrize('cfg,match', [
    (dict(feature_noise=-0.1), '^feature_noise must be a finite number >= 0'),
    (dict(feature_noise=0.1, num_clients=1), '^feature_noise needs num_clients >= 2'),
])
def test_bad_noise_is_one_line_error(cfg, match):
  base = dict(task='digits', model='logreg', num_clients=4, partition='iid')
  with pytest.raises(ValueError, match=match):
    tasks.build_task(tasks.TaskConfig(**{**base, **cfg}))
