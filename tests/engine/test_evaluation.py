"""Packed per-client evaluation against independent references: numpy logistic regression, the per-client
`tf.data` path it replaced (digits, and a padded next-token task with `char_lstm`), and one model per client."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import tasks
from tff_fl.engine import evaluation
from tff_fl.models import keras_models

from eval_reference import EVAL_KEYS, assert_sums_close, initial_weights, per_client_reference, token_task

SPEC = collections.OrderedDict(x=tf.TensorSpec([5], tf.float32), y=tf.TensorSpec([], tf.int32))


def test_matches_numpy_logreg():
  model_fn = keras_models.build_tff_model_fn(lambda: keras_models.logreg([5], 4), SPEC)
  rng = np.random.default_rng(0)
  w, b = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
  arrays = {c: (rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, 4, n).astype(np.int32))
            for c, n in zip('abc', (3, 17, 40))}
  evaluator = evaluation.build_evaluator(model_fn, arrays, batch_size=8)  # Batches span clients.
  results = evaluator(tff.learning.models.ModelWeights(trainable=[w, b], non_trainable=[]))
  summary = evaluation.summarize(list('abc'), results)
  accs, losses, ns = [], [], []
  for x, y in arrays.values():
    logits = x.astype(np.float64) @ w + b
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    losses.append(-logp[np.arange(len(y)), y].sum())
    accs.append(np.mean(np.argmax(logits, 1) == y))
    ns.append(len(y))
  np.testing.assert_allclose([r['num_examples'] for r in results], ns)
  np.testing.assert_allclose([r['loss_sum'] for r in results], losses, rtol=1e-5)
  np.testing.assert_allclose(summary['eval_loss'], np.sum(losses) / np.sum(ns), rtol=1e-5)
  np.testing.assert_allclose(summary['eval_accuracy'], np.dot(accs, ns) / np.sum(ns), rtol=1e-6)
  np.testing.assert_allclose(list(summary['per_client_accuracy'].values()), accs, rtol=1e-6)
  assert summary['client_accuracy_min'] == min(accs)
  np.testing.assert_allclose(summary['client_accuracy_p50'], np.median(accs))


@pytest.fixture(scope='module')
def digits():
  task = tasks.build_task(tasks.TaskConfig(task='digits', model='2nn', num_clients=30, partition='dirichlet',
                                           dirichlet_alpha=0.3, seed=1))
  return task, initial_weights(task, seed=3)


def test_digits_matches_per_client_path(digits):
  task, weights = digits
  evaluator = evaluation.build_evaluator(task, num_slots=3, batch_size=50)
  got = evaluator(weights, task.client_ids)
  assert_sums_close(got, per_client_reference(task.model_fn, weights, task.data.test, task.client_ids))
  subset = task.client_ids[::-3]  # Any subset, any order: results follow client_ids.
  assert_sums_close(evaluator(weights, subset), [got[task.client_ids.index(c)] for c in subset], rtol=1e-6)
  assert evaluator(weights, []) == []
  assert evaluation.client_accuracies(task, weights, subset) == evaluation.accuracies(subset, evaluator(weights,
                                                                                                       subset))


def test_next_token_task_with_padding_matches_per_client_path():
  task = token_task(train_snippets=(1, 1, 1, 1), test_snippets=(4, 0, 1, 7))
  weights = initial_weights(task)
  got = evaluation.task_evaluator(task)(weights)  # pad_id and eval arrays from the task.
  want = per_client_reference(task.model_fn, weights, task.data.test, task.client_ids, pad_id=task.pad_id)
  assert_sums_close(got, want)
  y = np.concatenate([task.data.test[c][1] for c in task.client_ids])
  assert sum(r['num_predictions'] for r in got) == np.sum(y != 0) < y.size  # Pads: not predictions.
  assert got[1]['num_examples'] == 0 and evaluation.client_accuracies(task, weights)['role1'] is None
  # No pad id: every target counts; batches of 3 span clients.
  unmasked = evaluation.build_evaluator(task.model_fn, task.data.test, batch_size=3)(weights)
  assert sum(r['num_predictions'] for r in unmasked) == y.size
  np.testing.assert_allclose([r['loss_sum'] for r in unmasked], [r['loss_sum'] for r in got], rtol=1e-6)


def test_pad_targets_are_not_counted():
  spec = collections.OrderedDict(x=tf.TensorSpec([3], tf.int64), y=tf.TensorSpec([3], tf.int64))

  def keras_fn():  # Per-position logits [B, 3, 4] from a fixed embedding of the input ids.
    return tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=[3], dtype=tf.int64),
                                tf.keras.layers.Embedding(5, 4)])

  model_fn = keras_models.build_tff_model_fn(keras_fn, spec)
  weights = tff.learning.models.ModelWeights(trainable=[np.eye(5, 4, dtype=np.float32)], non_trainable=[])
  x = np.array([[1, 2, 3], [1, 0, 0]], np.int64)  # id i predicts class i (id 4 -> all-zero logits -> class 0).
  y = np.array([[1, 2, 0], [3, 0, 0]], np.int64)  # Pad id 0 marks padding.
  res = evaluation.build_evaluator(model_fn, {'a': (x, y)}, pad_id=0)(weights)[0]
  valid = y != 0
  assert res['num_predictions'] == valid.sum() == 3
  assert res['correct'] == np.sum((x == y) & valid) == 2
  unmasked = evaluation.build_evaluator(model_fn, {'a': (x, y)})(weights)[0]
  assert unmasked['num_predictions'] == 6 and unmasked['correct'] == np.sum(x == y)


def test_each_client_evaluates_its_own_model(digits):
  task, weights = digits
  models = [tff.learning.models.ModelWeights([w * s for w in weights.trainable], weights.non_trainable)
            for s in (1.0, 0.5, -1.0)]
  model_of = np.random.default_rng(0).integers(0, 3, len(task.client_ids))
  evaluator = evaluation.build_evaluator(task, num_slots=2, batch_size=40)
  got = evaluator.evaluate_models(models, model_of)
  per_model = [evaluator(m) for m in models]
  assert_sums_close(got, [per_model[k][i] for i, k in enumerate(model_of)], rtol=1e-6)
  with pytest.raises(ValueError, match='model_of'):
    evaluator.evaluate_models(models, [0, 3] + [0] * (len(task.client_ids) - 2))
  with pytest.raises(ValueError, match='client_ids without eval arrays'):
    evaluator(weights, ['nobody'])


def test_in_process_runtime_equals_tff_runtime(digits):
  """One slot runs in this process by default; the same slot on TFF's runtime gives the same sums."""
  task, weights = digits
  local = evaluation.build_evaluator(task, batch_size=40)
  remote = evaluation.build_evaluator(task, batch_size=40, runtime='tff')
  assert (local.runtime, remote.runtime) == ('local', 'tff')
  assert_sums_close(local(weights), remote(weights), rtol=1e-6)
  models = [weights, tff.learning.models.ModelWeights([-w for w in weights.trainable], weights.non_trainable)]
  model_of = np.arange(len(task.client_ids)) % 2
  assert_sums_close(local.evaluate_models(models, model_of), remote.evaluate_models(models, model_of), rtol=1e-6)
  with pytest.raises(ValueError, match="runtime='local' runs one slot"):
    evaluation.build_evaluator(task, num_slots=2, runtime='local')


def test_bad_arguments(digits):
  task, _ = digits
  with pytest.raises(ValueError, match='batch_size'):
    evaluation.build_evaluator(task, batch_size=0)
  with pytest.raises(ValueError, match='num_slots'):
    evaluation.build_evaluator(task, num_slots=0)
  with pytest.raises(ValueError, match='eval_arrays'):
    evaluation.build_evaluator(task.model_fn)
  assert EVAL_KEYS == evaluation.EVAL_KEYS
