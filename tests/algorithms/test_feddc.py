"""FedDC on the engine (sequential clients and the client axis) against a numpy transcription of the authors'
`train_FedDC` / `train_model_FedDC` (gaoliang13/FedDC) with balanced clients."""

import numpy as np
import pytest

from tff_fl.algorithms import feddc

from logreg_clients import BATCH, build, initial_weights, run_cohorts  # tests/
from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py

LR, ALPHA, N, SIZE = 0.1, 0.1, 3, 10
STEPS = SIZE // BATCH  # One epoch in minibatches of BATCH: the code's n_minibatch.


def _balanced_arrays(seed=0):
  """Three clients of SIZE examples (the code's client weights n_i / mean n are then 1), shifted features."""
  rng = np.random.default_rng(seed)
  return [((rng.normal(size=(SIZE, 6)) + 2.0 * i).astype(np.float32), rng.integers(0, 3, SIZE).astype(np.int32))
          for i in range(N)]


def _numpy_feddc(params, arrays, cohorts):
  """The authors' loop in float64: local SGD on f_i + alpha/2 ||t - (theta - h_i)||^2 + <t, G - dg_i>; h_i += delta;
  dg_i' = dg_i - G - delta / (K lr); G += sum (dg_i' - dg_i) / N; theta = mean over the cohort of theta_i + mean over
  all N clients of h_i."""
  theta = [p.astype(np.float64) for p in params]
  zeros = lambda: [np.zeros_like(p) for p in theta]
  h, dg, big_g = {i: zeros() for i in range(N)}, {i: zeros() for i in range(N)}, zeros()
  for cohort in cohorts:
    trained, dg_sum = [], zeros()
    for i in cohort:
      xs, ys = arrays[i]
      t = [p.copy() for p in theta]
      for s in range(0, SIZE, BATCH):
        g = logreg_loss_and_grads(t[0], t[1], xs[s:s + BATCH].astype(np.float64), ys[s:s + BATCH])[1:]
        t = [tk - LR * (gk + ALPHA * (tk - (wk - hk)) + (bg - dk))
             for tk, gk, wk, hk, bg, dk in zip(t, g, theta, h[i], big_g, dg[i])]
      delta = [tk - wk for tk, wk in zip(t, theta)]
      h[i] = [hk + d for hk, d in zip(h[i], delta)]
      new_dg = [dk - bg - d / (STEPS * LR) for dk, bg, d in zip(dg[i], big_g, delta)]
      dg_sum = [s + n - o for s, n, o in zip(dg_sum, new_dg, dg[i])]
      dg[i] = new_dg
      trained.append(t)
    big_g = [bg + s / N for bg, s in zip(big_g, dg_sum)]
    theta = [np.mean([t[k] for t in trained], axis=0) + np.mean([h[i][k] for i in range(N)], axis=0)
             for k in range(len(theta))]
  return theta, big_g, h, dg


@pytest.mark.parametrize('client_axis', [False, True])
def test_matches_numpy_transcription_of_the_authors_code(client_axis):
  arrays, cohorts = _balanced_arrays(), [(0, 1), (1, 2), (0, 2)]
  process = build(feddc.FedDC(ALPHA, N, LR, STEPS), arrays, client_axis=client_axis)
  assert process.client_execution == ('client axis' if client_axis else 'sequential (client_axis=False)')
  state, client_states = run_cohorts(process, cohorts)
  want_theta, want_g, want_h, want_dg = _numpy_feddc(initial_weights().trainable, arrays, cohorts)
  for got, want in zip(process.get_model_weights(state).trainable, want_theta):
    np.testing.assert_allclose(got, want, atol=2e-5)
  for got, want in zip(state['extra']['gradient_diff'], want_g):
    np.testing.assert_allclose(got, want, atol=2e-5)
  for got, want in zip(state['extra']['drift_sum'], [sum(want_h[i][k] for i in range(N)) for k in range(2)]):
    np.testing.assert_allclose(got, want, atol=2e-5)
  for i in range(N):
    for got, want in zip(client_states[i]['drift'], want_h[i]):
      np.testing.assert_allclose(got, want, atol=2e-5)
    for got, want in zip(client_states[i]['gradient_diff'], want_dg[i]):
      np.testing.assert_allclose(got, want, atol=2e-4)
  assert np.max(np.abs(want_g[0])) > 1e-2 and np.max(np.abs(want_h[0][0])) > 1e-2  # Not trivially zero.


@pytest.mark.parametrize('kwargs,match', [
    (dict(alpha=0.0, num_clients=3, client_learning_rate=0.1, num_local_steps=2), 'alpha'),
    (dict(alpha=0.1, num_clients=0, client_learning_rate=0.1, num_local_steps=2), 'num_clients'),
    (dict(alpha=0.1, num_clients=3, client_learning_rate=0.1, num_local_steps=0), 'num_local_steps'),
    (dict(alpha=0.1, num_clients=3, client_learning_rate=-1.0, num_local_steps=2), 'client_learning_rate'),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    build(feddc.FedDC(**kwargs), _balanced_arrays())
