"""Seeded DP aggregators: same seed -> same noise (also across a resume), fresh noise every round, the Gaussian's
stddev, and -- noise aside -- the same clipping and clip adaptation as TFF's stock factories."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_fl.aggregators import privacy

DIM, COHORT = 4000, 20
VALUE_TYPE = tff.TensorType(np.float32, [DIM])


def _records(round_num):
  rng = np.random.default_rng(round_num)
  return [rng.normal(size=DIM).astype(np.float32) * s for s in np.linspace(0.2, 2.0, COHORT)]


def _run(factory, rounds=3, state=None, first_round=0):
  process = factory.create(VALUE_TYPE)
  state = process.initialize() if state is None else state
  results, states = [], []
  for r in range(first_round, first_round + rounds):
    out = process.next(state, _records(r))
    state = out.state
    results.append(np.asarray(out.result))
    states.append(state)
  return results, states


@pytest.mark.parametrize('dp', ['fixed', 'adaptive'])
def test_same_seed_same_noise_different_seed_different_noise(dp):
  build = lambda seed: privacy.build_dp_aggregator(dp, 1.0, 1.0, COHORT, noise_seed=seed)
  a, states = _run(build(3))
  b, _ = _run(build(3))
  c, _ = _run(build(4))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert all(not np.allclose(x, z) for x, z in zip(a, c))
  # Resume: a fresh process started from round 1's state continues exactly as the uninterrupted run.
  resumed, _ = _run(build(3), rounds=2, state=states[0], first_round=1)
  for x, y in zip(resumed, a[1:]):
    np.testing.assert_array_equal(x, y)


def test_fresh_noise_every_round_with_the_gaussian_stddev():
  """Zero records: each round's output is pure noise / cohort; rounds are independent draws of
  N(0, (z * clip / cohort)^2) per coordinate (not one draw repeated)."""
  z, clip = 2.0, 0.5
  process = privacy.build_dp_aggregator('fixed', z, clip, COHORT, noise_seed=11).create(VALUE_TYPE)
  state, outputs = process.initialize(), []
  for _ in range(3):
    out = process.next(state, [np.zeros(DIM, np.float32)] * COHORT)
    state = out.state
    outputs.append(np.asarray(out.result))
  expected = z * clip / COHORT
  for o in outputs:
    assert abs(o.mean()) < 4 * expected / np.sqrt(DIM)
    assert abs(o.std() / expected - 1) < 0.05  # 4000 coordinates: relative sd of the estimate ~1.1%.
  assert abs(np.corrcoef(outputs[0], outputs[1])[0, 1]) < 0.1


@pytest.mark.parametrize('dp', ['fixed', 'adaptive'])
def test_without_noise_equals_stock_factory(dp):
  """z = 0: the seeded queries clip, sum, normalise and adapt the clip norm exactly as TFF's factories."""
  kwargs = dict(clip_norm=60.0, clients_per_round=COHORT)
  seeded, seeded_states = _run(privacy.build_dp_aggregator(dp, 0.0, noise_seed=5, **kwargs))
  stock, stock_states = _run(privacy.build_dp_aggregator(dp, 0.0, **kwargs))
  for x, y in zip(seeded, stock):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  if dp == 'adaptive':  # The clip norm moved (norms range 13-126) and both agree.
    clip = lambda s: float(s.query_state.numerator_state.sum_state.l2_norm_clip)
    assert clip(seeded_states[-1]) != 60.0
    np.testing.assert_allclose([clip(s) for s in seeded_states], [clip(s) for s in stock_states], rtol=1e-6)
