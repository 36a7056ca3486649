"""SCAFFOLD on the engine against FedAvg (control variates zero) and a numpy implementation of Algorithm 1."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import optimizers
from tff_fl.algorithms import scaffold

from logreg_clients import BATCH, IDS, LR, MODEL_FN, SIZES, UNIFORM, arrays, build, run_cohorts  # tests/
from logreg_clients import datasets as _datasets, initial_weights as _initial_weights, sgd as _sgd
from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py

_arrays = lambda seed=0: arrays(seed, shift=2.0)  # Heterogeneous clients, so control variates matter.


def _zeros_like(structure):
  return tf.nest.map_structure(np.zeros_like, structure)


def test_zero_control_variates_equal_fed_avg_exactly():
  arrays = _arrays()
  process = build(scaffold.Scaffold(LR, 3), arrays, server_lr=0.7, num_slots=2)
  avg = build(fed_avg.FedAvg(), arrays, server_lr=0.7, num_slots=2)
  stock = tff.learning.algorithms.build_unweighted_fed_avg(MODEL_FN, _sgd(LR), _sgd(0.7))
  state = process.set_model_weights(process.initialize(), _initial_weights())
  avg_state = avg.set_model_weights(avg.initialize(), _initial_weights())
  stock_state = stock.set_model_weights(stock.initialize(), _initial_weights())
  zeros = process.initial_client_state()
  assert not np.any(zeros)
  for r in range(1, 4):
    state = collections.OrderedDict(state)
    state['extra'] = _zeros_like(state['extra'])  # Force c = 0 and every c_i = 0 each round.
    process.store.put_many(IDS, [zeros] * 3)
    state = process.next(state, engine.Cohort.full(r, IDS)).state
    avg_state = avg.next(avg_state, engine.Cohort.full(r, IDS)).state
    stock_state = stock.next(stock_state, _datasets(arrays)).state
  ours = process.get_model_weights(state).trainable
  for a, b, c in zip(ours, avg.get_model_weights(avg_state).trainable, stock.get_model_weights(stock_state).trainable):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-6)
  assert max(np.max(np.abs(a - w)) for a, w in zip(ours, _initial_weights().trainable)) > 1e-2
  # Left free, the control variates become non-zero and change the trajectory.
  control = process.client_state_structure(process.client_states(['0'])[0])['control']
  assert max(np.max(np.abs(c)) for c in control) > 1e-3


def numpy_scaffold_client(x, c, c_i, xs, ys, lr_l, batch=BATCH):
  """One client of Algorithm 1 (option II) in float64: local steps y <- y - lr_l (g(y) - c_i + c) over minibatches of
  `batch` in order; returns (y, new c_i)."""
  y, steps = [p.astype(np.float64) for p in x], 0
  for s in range(0, len(xs), batch):
    g = logreg_loss_and_grads(y[0], y[1], xs[s:s + batch].astype(np.float64), ys[s:s + batch])[1:]
    y = [p - lr_l * (gk - cik + ck) for p, gk, cik, ck in zip(y, g, c_i, c)]
    steps += 1
  return y, [cik - ck + (xk - yk) / (steps * lr_l) for cik, ck, xk, yk in zip(c_i, c, x, y)]


def _numpy_scaffold(params, arrays, cohorts, lr_l, lr_g, n_total):
  """Algorithm 1 of Karimireddy et al. (option II), uniform averaging, minibatches of BATCH in order."""
  x = [p.astype(np.float64) for p in params]
  c = [np.zeros_like(p) for p in x]
  c_i = {i: [np.zeros_like(p) for p in x] for i in range(len(arrays))}
  for cohort in cohorts:
    dys, dcs = [], []
    for i in cohort:
      y, new_ci = numpy_scaffold_client(x, c, c_i[i], *arrays[i], lr_l)
      dys.append([yk - xk for yk, xk in zip(y, x)])
      dcs.append([n - o for n, o in zip(new_ci, c_i[i])])
      c_i[i] = new_ci
    x = [xk + lr_g * np.mean([d[k] for d in dys], axis=0) for k, xk in enumerate(x)]
    c = [ck + np.sum([d[k] for d in dcs], axis=0) / n_total for k, ck in enumerate(c)]
  return x, c, c_i


def test_matches_numpy_algorithm_1_with_partial_participation():
  arrays, lr_g = _arrays(), 0.7
  cohorts = [(0, 1), (1, 2)]
  process = build(scaffold.Scaffold(LR, 3), arrays, server_lr=lr_g)
  state, client_states = run_cohorts(process, cohorts)
  want_x, want_c, want_ci = _numpy_scaffold(_initial_weights().trainable, arrays, cohorts, LR, lr_g, 3)
  for got, want in zip(process.get_model_weights(state).trainable, want_x):
    np.testing.assert_allclose(got, want, atol=2e-5)
  for got, want in zip(state['extra'], want_c):
    np.testing.assert_allclose(got, want, atol=2e-5)
  for i in range(3):
    for got, want in zip(client_states[i]['control'], want_ci[i]):
      np.testing.assert_allclose(got, want, atol=2e-5)
  assert np.max(np.abs(want_c[0])) > 1e-2  # The reference is not trivially zero.


@pytest.mark.parametrize('kwargs,match', [
    (dict(client_learning_rate=0.0, num_clients=3), 'client_learning_rate'),
    (dict(client_learning_rate=0.1, num_clients=0), 'num_clients'),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    build(scaffold.Scaffold(**kwargs), _arrays())


def _niid_bench_scaffold(params, arrays, cohorts, lr, rho, wd, n_total):
  """NIID-Bench's SCAFFOLD (`train_net_scaffold` + its server branch) in float64: torch SGD(lr, momentum=rho,
  weight_decay=wd) on the plain minibatch gradient, then net -= lr * (c - c_i) after every step; c_i+ = c_i - c +
  (x - y) / (cnt * lr); x <- sum_i n_i / sum n * y_i over the cohort; c <- c + sum_i (c_i+ - c_i) / N."""
  x = [p.astype(np.float64) for p in params]
  c = [np.zeros_like(p) for p in x]
  c_i = {i: [np.zeros_like(p) for p in x] for i in range(len(arrays))}
  for cohort in cohorts:
    ys, dcs, ns = [], [], []
    for i in cohort:
      xs, labels = arrays[i]
      y, buf, cnt = [p.copy() for p in x], None, 0
      for s in range(0, len(xs), BATCH):
        g = logreg_loss_and_grads(y[0], y[1], xs[s:s + BATCH].astype(np.float64), labels[s:s + BATCH])[1:]
        d = [gk + wd * yk for gk, yk in zip(g, y)]
        buf = d if buf is None else [rho * bk + dk for bk, dk in zip(buf, d)]
        y = [yk - lr * bk for yk, bk in zip(y, buf)]
        y = [yk - lr * (ck - cik) for yk, ck, cik in zip(y, c, c_i[i])]
        cnt += 1
      new_ci = [cik - ck + (xk - yk) / (cnt * lr) for cik, ck, xk, yk in zip(c_i[i], c, x, y)]
      dcs.append([n - o for n, o in zip(new_ci, c_i[i])])
      c_i[i] = new_ci
      ys.append(y)
      ns.append(len(xs))
    p = np.asarray(ns, np.float64) / np.sum(ns)
    x = [sum(pk * yk[k] for pk, yk in zip(p, ys)) for k in range(len(x))]
    c = [ck + np.sum([d[k] for d in dcs], axis=0) / n_total for k, ck in enumerate(c)]
  return x, c, c_i


def test_after_step_correction_matches_numpy_niid_bench():
  """correction='after_step' with momentum 0.9 and weight decay, examples-weighted average, partial participation."""
  arrays, rho, wd, lr = _arrays(), 0.9, 0.01, 0.05
  cohorts = [(0, 1), (1, 2), (0, 2)]
  train = {str(i): a for i, a in enumerate(arrays)}
  opt = optimizers.with_weight_decay(tff.learning.optimizers.build_sgdm(learning_rate=lr, momentum=rho), wd)
  process = engine.build_process(scaffold.Scaffold(lr, 3, correction='after_step'), MODEL_FN, train,
                                 lambda cid, r: np.arange(len(train[cid][0])), batch_size=BATCH,
                                 client_optimizer=opt, server_optimizer=_sgd(1.0),
                                 client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES)
  state, client_states = run_cohorts(process, cohorts)
  want_x, want_c, want_ci = _niid_bench_scaffold(_initial_weights().trainable, arrays, cohorts, lr, rho, wd, 3)
  for got, want in zip(process.get_model_weights(state).trainable, want_x):
    np.testing.assert_allclose(got, want, atol=5e-5)
  for got, want in zip(state['extra'], want_c):
    np.testing.assert_allclose(got, want, atol=5e-5)
  for i in range(3):
    for got, want in zip(client_states[i]['control'], want_ci[i]):
      np.testing.assert_allclose(got, want, atol=5e-5)
  # The correction outside the optimizer is not the same as in the gradient under momentum.
  inside = engine.build_process(scaffold.Scaffold(lr, 3), MODEL_FN, train,
                                lambda cid, r: np.arange(len(train[cid][0])), batch_size=BATCH,
                                client_optimizer=opt, server_optimizer=_sgd(1.0),
                                client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES)
  inside_state, _ = run_cohorts(inside, cohorts)
  gap = max(np.max(np.abs(a - b)) for a, b in zip(process.get_model_weights(state).trainable,
                                                  inside.get_model_weights(inside_state).trainable))
  assert gap > 1e-3 and np.max(np.abs(want_c[0])) > 1e-2


def test_after_step_with_plain_sgd_equals_the_paper_mode():
  arrays = _arrays()
  a = build(scaffold.Scaffold(LR, 3, correction='after_step'), arrays)
  b = build(scaffold.Scaffold(LR, 3), arrays)
  sa, _ = run_cohorts(a, [(0, 1), (1, 2)])
  sb, _ = run_cohorts(b, [(0, 1), (1, 2)])
  for x, y in zip(a.get_model_weights(sa).trainable, b.get_model_weights(sb).trainable):
    np.testing.assert_allclose(x, y, atol=1e-6)


def test_unknown_correction():
  with pytest.raises(ValueError, match='correction must be one of gradient, after_step'):
    scaffold.Scaffold(0.1, 3, correction='inside').validate()
