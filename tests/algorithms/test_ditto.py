"""Ditto on the engine against a numpy implementation of Algorithm 1 (Li et al. 2021): FedAvg global model +
proximal personal models; the personal pass leaves the training metrics FedAvg's; `personal_weights`."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl.algorithms import ditto
from tff_fl.algorithms import fed_avg

from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py
from logreg_clients import BATCH, IDS, LR, arrays, build, run_cohorts  # tests/logreg_clients.py
from logreg_clients import initial_weights as _initial_weights

LAM = 0.5

_arrays = lambda seed=0: arrays(seed, shift=2.0)  # The heterogeneous clients of test_scaffold.


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
  process = build(ditto.Ditto(LAM), arrays, num_slots=2)
  state, client_states = run_cohorts(process, cohorts)
  want_w, want_v = _numpy_ditto(_initial_weights().trainable, arrays, cohorts, LAM)
  for got, want in zip(process.get_model_weights(state).trainable, want_w):
    np.testing.assert_allclose(got, want, atol=2e-5)
  for k in range(3):
    assert float(client_states[k]['initialized']) == 1.0
    for got, want in zip(client_states[k]['personal'], want_v[k]):
      np.testing.assert_allclose(got, want, atol=2e-5)
  # The personal models differ from the global one (otherwise the test would not see the proximal step).
  assert max(np.max(np.abs(a - b)) for a, b in zip(want_v[0], want_w)) > 1e-2


def test_personal_pass_is_not_in_the_training_metrics():
  arrays = _arrays()
  outputs = []
  for algorithm in (ditto.Ditto(LAM), fed_avg.FedAvg()):
    process = build(algorithm, arrays)
    state = process.set_model_weights(process.initialize(), _initial_weights())
    outputs.append(process.next(state, engine.Cohort.full(1, IDS)))
  got, want = (o.metrics['client_work']['train'] for o in outputs)
  assert got['num_examples'] == want['num_examples'] == sum(len(x) for x, _ in arrays)
  assert got['loss'] == want['loss'] and got['sparse_categorical_accuracy'] == want['sparse_categorical_accuracy']
  assert [m['loss'] for m in outputs[0].client_metrics] == [m['loss'] for m in outputs[1].client_metrics]
  for a, b in zip(outputs[0].state['model'].trainable, outputs[1].state['model'].trainable):
    np.testing.assert_array_equal(a, b)  # The global model is exactly FedAvg's.


def test_personal_weights_are_the_personal_model_once_trained():
  algorithm = ditto.Ditto(LAM)
  weights = _initial_weights()
  own = [np.full_like(w, 3.0) for w in weights.trainable]
  for initialized, want in ((1.0, own), (0.0, weights.trainable)):
    state = dict(personal=[tf.constant(v) for v in own], initialized=tf.constant(initialized))
    got = algorithm.personal_weights(tf.nest.map_structure(tf.constant, weights), state)
    assert isinstance(got, tff.learning.models.ModelWeights)
    for g, w in zip(got.trainable, want):
      np.testing.assert_array_equal(g, w)


def test_bad_lambda():
  with pytest.raises(ValueError, match='lam'):
    build(ditto.Ditto(-1.0), _arrays())
