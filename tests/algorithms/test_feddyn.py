"""FedDyn on the engine against a numpy implementation of Algorithm 1 of Acar et al. 2021, and against stock
FedProx when g_k = h = 0."""

import numpy as np
import pytest

from tff_fl import engine
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import feddyn

from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py
from logreg_clients import BATCH, IDS, LR, arrays, MODEL_FN, UNIFORM  # tests/logreg_clients.py
from logreg_clients import datasets as _datasets, initial_weights as _initial_weights, sgd as _sgd
from test_scaffold import build, run_cohorts

ALPHA = 0.05

_arrays = lambda seed=0: arrays(seed, shift=2.0)  # The heterogeneous clients of test_scaffold.


def _numpy_feddyn(params, arrays, cohorts, lr, alpha, m):
  """Algorithm 1: local SGD on grad L_k - g_k + alpha (theta - theta_prev) over minibatches of BATCH in order."""
  theta = [p.astype(np.float64) for p in params]
  h = [np.zeros_like(p) for p in theta]
  g = {k: [np.zeros_like(p) for p in theta] for k in range(len(arrays))}
  for cohort in cohorts:
    locals_ = []
    for k in cohort:
      xs, ys = arrays[k]
      w = [p.copy() for p in theta]
      for s in range(0, len(xs), BATCH):
        grads = logreg_loss_and_grads(w[0], w[1], xs[s:s + BATCH], ys[s:s + BATCH])[1:]
        w = [wi - lr * (gr - gk + alpha * (wi - ti)) for wi, gr, gk, ti in zip(w, grads, g[k], theta)]
      g[k] = [gk - alpha * (wi - ti) for gk, wi, ti in zip(g[k], w, theta)]
      locals_.append(w)
    h = [hi - alpha / m * np.sum([w[i] - theta[i] for w in locals_], axis=0) for i, hi in enumerate(h)]
    theta = [np.mean([w[i] for w in locals_], axis=0) - h[i] / alpha for i in range(len(theta))]
  return theta, h, g


def test_matches_numpy_algorithm_1_with_partial_participation():
  arrays, cohorts = _arrays(), [(0, 1), (1, 2), (0, 2)]
  process = build(feddyn.FedDyn(ALPHA, 3), arrays, num_slots=2)
  state, client_states = run_cohorts(process, cohorts)
  want_theta, want_h, want_g = _numpy_feddyn(_initial_weights().trainable, arrays, cohorts, LR, ALPHA, 3)
  for got, want in zip(process.get_model_weights(state).trainable, want_theta):
    np.testing.assert_allclose(got, want, atol=3e-5)
  for got, want in zip(state['extra'], want_h):
    np.testing.assert_allclose(got, want, atol=3e-6)
  for k in range(3):
    for got, want in zip(client_states[k]['gradient'], want_g[k]):
      np.testing.assert_allclose(got, want, atol=3e-5)
  assert np.max(np.abs(want_h[0])) > 1e-3  # h is not trivially zero, so -h/alpha moved the model.


def test_zero_state_round_is_fedprox_with_mu_alpha():
  arrays = _arrays()
  process = build(feddyn.FedDyn(ALPHA, 3), arrays)
  prox = fed_avg.build_fed_prox(MODEL_FN, _sgd(LR), proximal_mu=ALPHA, client_weighting=UNIFORM)
  state = process.set_model_weights(process.initialize(), _initial_weights())
  assert not any(np.any(h) for h in state['extra']) and not np.any(process.initial_client_state())
  state = process.next(state, engine.Cohort.full(1, IDS)).state
  prox_state = prox.next(prox.set_model_weights(prox.initialize(), _initial_weights()), _datasets(arrays)).state
  # One round from h = 0, g_k = 0: clients run FedProx steps; the server then subtracts h_1 / alpha, where
  # h_1 = -(alpha/m) sum_k (theta_k - theta_0) = (alpha/m) * 3 * mean update, i.e. theta_1 = prox - mean update.
  prox_w = prox.get_model_weights(prox_state).trainable
  w0 = _initial_weights().trainable
  for got, p, init in zip(process.get_model_weights(state).trainable, prox_w, w0):
    np.testing.assert_allclose(got, p - (init - p), atol=2e-6)


@pytest.mark.parametrize('kwargs,match', [
    (dict(alpha=0.0, num_clients=3), 'alpha'),
    (dict(alpha=0.1, num_clients=0), 'num_clients'),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    build(feddyn.FedDyn(**kwargs), _arrays())
