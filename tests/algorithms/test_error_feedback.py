"""Top-k with error feedback on the engine: residuals against numpy (around FedAvg), EF vs stateless top-k, and the
wrapper around SCAFFOLD (sent + residual' = update + residual, SCAFFOLD's own state and upload unchanged)."""

import collections
import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl.aggregators import compression
from tff_fl.algorithms import error_feedback
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import scaffold
from tff_fl.models import keras_models

from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py
from test_scaffold import build, numpy_scaffold_client

DIM_X, CLASSES, BATCH, LR = 8, 4, 5, 0.2
SPEC = collections.OrderedDict(x=tf.TensorSpec([DIM_X], tf.float32), y=tf.TensorSpec([], tf.int32))
MODEL_FN = keras_models.build_tff_model_fn(lambda: keras_models.logreg([DIM_X], CLASSES), SPEC)
D = DIM_X * CLASSES + CLASSES
NUM_EXAMPLES, UNIFORM = tff.learning.ClientWeighting.NUM_EXAMPLES, tff.learning.ClientWeighting.UNIFORM


def _arrays(sizes=(10, 15), seed=0):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(DIM_X, CLASSES))
  out = []
  for n in sizes:
    x = rng.normal(size=(n, DIM_X)).astype(np.float32)
    out.append((x, np.argmax(x @ w + rng.normal(scale=0.3, size=(n, CLASSES)), 1).astype(np.int32)))
  return out


def _build(algorithm, arrays, fraction=None, weighting=NUM_EXAMPLES, **kwargs):
  agg = None if fraction is None else error_feedback.aggregator(fraction)
  return build(algorithm, arrays, model_fn=MODEL_FN, client_lr=LR, weighting=weighting, model_aggregator=agg,
               **kwargs)


def _flat(weights):
  return np.concatenate([np.asarray(w, np.float64).ravel() for w in weights.trainable])


def _numpy_delta(params, x, y):
  """x0 - x_final of local minibatch SGD on softmax cross-entropy (numpy), flattened like the TFF update."""
  w, b = params[0].astype(np.float64), params[1].astype(np.float64)
  w0, b0 = w.copy(), b.copy()
  for s in range(0, len(x), BATCH):
    xb, yb = x[s:s + BATCH].astype(np.float64), y[s:s + BATCH]
    _, gw, gb = logreg_loss_and_grads(w, b, xb, yb)
    w, b = w - LR * gw, b - LR * gb
  return np.concatenate([(w0 - w).ravel(), b0 - b])


def _numpy_topk(v, k):
  keep = np.argsort(-np.abs(v), kind='stable')[:k]
  out = np.zeros_like(v)
  out[keep] = v[keep]
  return out


ARRAYS, FRACTION, IDS = _arrays(sizes=(20, 20, 20), seed=1), 0.05, ['0', '1', '2']


@functools.lru_cache(maxsize=None)
def _ef_fed_avg():
  """EF around FedAvg on ARRAYS (built once; tests reset the client states they use)."""
  return _build(error_feedback.TopKErrorFeedback(fed_avg.FedAvg(), FRACTION), ARRAYS, FRACTION, num_slots=2)


def test_residual_accumulates_exactly_what_topk_dropped():
  k = error_feedback.num_kept(FRACTION, D)
  process = _ef_fed_avg()
  assert process.state_dim == D
  process.store.put_many(IDS, [process.initial_client_state()] * 3)  # Fresh residuals (zeros).
  state = process.initialize()
  residuals = [np.zeros(D) for _ in IDS]
  sizes = np.array([len(x) for x, _ in ARRAYS], np.float64)
  for r in (1, 2):  # The second round starts from non-zero residuals.
    before = [np.asarray(w) for w in process.get_model_weights(state).trainable]
    sent = []
    for i, (x, y) in enumerate(ARRAYS):
      corrected = _numpy_delta(before, x, y) + residuals[i]
      sent.append(_numpy_topk(corrected, k))
      residuals[i] = corrected - sent[-1]
    output = process.next(state, engine.Cohort.full(r, IDS))
    state = output.state
    for i, cid in enumerate(IDS):
      got = process.client_state_structure(process.client_states([cid])[0])['residual']
      np.testing.assert_allclose(got, residuals[i], atol=1e-5)
      assert np.count_nonzero(got) == D - k
    mean_sent = np.sum([n * v for n, v in zip(sizes, sent)], axis=0) / sizes.sum()
    np.testing.assert_allclose(np.concatenate([w.ravel() for w in before]) - _flat(process.get_model_weights(state)),
                               mean_sent, atol=1e-5)
  assert output.metrics['aggregator']['bits_per_client'] == k * (32 + int(np.ceil(np.log2(D))))


def _pooled_loss(weights, arrays):
  x = np.concatenate([a[0] for a in arrays]).astype(np.float64)
  y = np.concatenate([a[1] for a in arrays])
  logits = x @ weights[0] + weights[1]
  logits -= logits.max(1, keepdims=True)
  return float(np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(y)), y]))


def test_error_feedback_beats_stateless_topk():
  rounds = 12
  ef = _ef_fed_avg()
  ef.store.put_many(IDS, [ef.initial_client_state()] * 3)
  stateless = build(fed_avg.FedAvg(), ARRAYS, model_fn=MODEL_FN, client_lr=LR, weighting=NUM_EXAMPLES,
                    model_aggregator=compression.topk(FRACTION))  # Stateless top-k: what it drops is lost.
  ef_state = ef.initialize()
  sl_state = stateless.set_model_weights(stateless.initialize(), ef.get_model_weights(ef_state))
  initial = _pooled_loss(ef.get_model_weights(ef_state).trainable, ARRAYS)
  for r in range(1, rounds + 1):
    ef_out = ef.next(ef_state, engine.Cohort.full(r, IDS))
    sl_out = stateless.next(sl_state, engine.Cohort.full(r, IDS))
    ef_state, sl_state = ef_out.state, sl_out.state
  ef_loss = _pooled_loss(ef.get_model_weights(ef_state).trainable, ARRAYS)
  sl_loss = _pooled_loss(stateless.get_model_weights(sl_state).trainable, ARRAYS)
  # Same bits on the wire per client and round.
  assert ef_out.metrics['aggregator']['bits_per_client'] == sl_out.metrics['aggregator']['bits_per_client']
  assert sl_loss < initial
  assert ef_loss < sl_loss - 0.05, (initial, ef_loss, sl_loss)


def test_wraps_scaffold_sent_plus_residual_is_update_plus_residual():
  arrays, fraction, ids = _arrays(), 0.1, ['0', '1']
  k = error_feedback.num_kept(fraction, D)
  ef = _build(error_feedback.TopKErrorFeedback(scaffold.Scaffold(LR, 2), fraction), arrays, fraction,
              weighting=UNIFORM, num_slots=2)
  assert ef.state_dim == 2 * D and ef.parts.algorithm.name == 'scaffold+topk_ef'
  state = ef.initialize()
  for r in (1, 2):
    before = ef.get_model_weights(state)
    x, c = [np.asarray(w) for w in before.trainable], [np.asarray(v) for v in state['extra']]
    old = {cid: ef.client_state_structure(ef.client_states([cid])[0]) for cid in ids}
    refs = {}  # SCAFFOLD's own client step (numpy) from the same x, c and c_i: (update x - y, new c_i).
    for i, cid in enumerate(ids):
      y, new_ci = numpy_scaffold_client(x, c, old[cid]['inner']['control'], *arrays[i], LR, batch=BATCH)
      refs[cid] = (np.concatenate([(a - b).ravel() for a, b in zip(x, y)]), new_ci)
    state = ef.next(state, engine.Cohort.full(r, ids)).state
    sent = []
    for cid in ids:
      new = ef.client_state_structure(ef.client_states([cid])[0])
      update, want_ci = refs[cid]
      # Top-k kept k coordinates (their residual is now 0) and dropped the rest into the residual.
      assert np.count_nonzero(new['residual']) == D - k
      s = update + old[cid]['residual'] - new['residual']  # sent = update + residual - residual'
      np.testing.assert_allclose(s[new['residual'] != 0], 0.0, atol=1e-5)
      sent.append(s)
      for got, want in zip(new['inner']['control'], want_ci):  # SCAFFOLD's c_i, unchanged by the wrapper.
        np.testing.assert_allclose(got, want, atol=1e-4)
    # The aggregate (uniform mean, server SGD at 1) is the mean of what the clients sent.
    np.testing.assert_allclose(_flat(before) - _flat(ef.get_model_weights(state)), np.mean(sent, axis=0),
                               atol=1e-5)
    # c moved by both clients' dc_i / N (the inner upload passed through the wrapper).
    want_c = [ck + sum(refs[cid][1][j] - old[cid]['inner']['control'][j] for cid in ids) / 2
              for j, ck in enumerate(c)]
    for got, want in zip(state['extra'], want_c):
      np.testing.assert_allclose(got, want, atol=1e-4)
    assert max(np.max(np.abs(np.asarray(v))) for v in state['extra']) > 1e-3
  assert np.max(np.abs(old['0']['residual'])) > 1e-3  # Round 2 started from non-zero residuals.


def test_bad_fraction():
  with pytest.raises(ValueError, match='fraction'):
    _build(error_feedback.TopKErrorFeedback(fed_avg.FedAvg(), 0.0), _arrays())
