"""Ditto against a numpy implementation of Algorithm 1 (Li et al. 2021): FedAvg global model + proximal personal
models; and the personalized evaluation reads the personal model."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_fl.algorithms import ditto
from tff_fl.algorithms import fedper
from tff_fl.simulation import evaluation

from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py
from test_scaffold import BATCH, LR, MODEL_FN, UNIFORM, _arrays, _datasets, _initial_weights, _sgd, run_cohorts

LAM = 0.5


def _sgd_pass(w, xs, ys, anchor=None, lam=0.0):
  for s in range(0, len(xs), BATCH):
    grads = logreg_loss_and_grads(w[0], w[1], xs[s:s + BATCH], ys[s:s + BATCH])[1:]
    w = [wi - LR * (g + (lam * (wi - a) if anchor is not None else 0.0))
         for wi, g, a in zip(w, grads, anchor or w)]
  return w


def _numpy_ditto(params, arrays, cohorts, lam):
  w = [p.astype(np.float64) for p in params]
  v = {}
  for cohort in cohorts:
    locals_ = []
    for k in cohort:
      xs, ys = arrays[k]
      locals_.append(_sgd_pass(w, xs, ys))
      v[k] = _sgd_pass(v.get(k, w), xs, ys, anchor=w, lam=lam)
    w = [np.mean([wk[i] for wk in locals_], axis=0) for i in range(len(w))]  # uniform FedAvg, server SGD(1)
  return w, v


def test_matches_numpy_algorithm_1():
  arrays, cohorts = _arrays(), [(0, 1), (1, 2), (0, 1)]
  process = ditto.build_ditto(MODEL_FN, _sgd(LR), LAM, client_weighting=UNIFORM)
  state, client_states = run_cohorts(process, arrays, cohorts)
  want_w, want_v = _numpy_ditto(_initial_weights().trainable, arrays, cohorts, LAM)
  for got, want in zip(process.get_model_weights(state).trainable, want_w):
    np.testing.assert_allclose(got, want, atol=2e-5)
  for k in range(3):
    assert float(client_states[k]['initialized']) == 1.0
    for got, want in zip(client_states[k]['personal'], want_v[k]):
      np.testing.assert_allclose(got, want, atol=2e-5)
  # The personal models differ from the global one (otherwise the test would not see the proximal step).
  assert max(np.max(np.abs(a - b)) for a, b in zip(want_v[0], want_w)) > 1e-2


def test_personalized_eval_uses_the_personal_model():
  arrays = _arrays()
  process = ditto.build_ditto(MODEL_FN, _sgd(LR), LAM, client_weighting=UNIFORM)
  state, client_states = run_cohorts(process, arrays, [(0, 1)])
  weights = process.get_model_weights(state)
  personal_eval = fedper.build_client_state_eval(MODEL_FN, process.client_state_type, ditto.personal_model)
  per_client = evaluation.build_per_client_eval(MODEL_FN)
  data = _datasets(arrays)
  got = personal_eval(weights, client_states, data)
  for k in (0, 1, 2):  # Client 2 never trained: its personal model is the global one.
    own = tff.learning.models.ModelWeights(
        trainable=list(client_states[k]['personal']) if k < 2 else list(weights.trainable), non_trainable=[])
    want = per_client(own, [data[k]])[0]
    assert int(got[k]['correct']) == int(want['correct']) and int(got[k]['num_predictions']) > 0


def test_bad_lambda():
  with pytest.raises(ValueError, match='--ditto_lambda'):
    ditto.build_ditto(MODEL_FN, _sgd(LR), -1.0)
