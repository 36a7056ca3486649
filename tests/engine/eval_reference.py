"""Independent references for the packed evaluator: the per-client `tf.data` evaluation it replaced, and a tiny
generated next-token task shaped like Shakespeare (BOS/EOS-wrapped snippets, zero-padded rows, pad id 0)."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import tasks_real
from tff_fl.models import char_lstm

EVAL_KEYS = ('loss_sum', 'correct', 'num_examples', 'num_predictions')
VOCAB, SEQ_LEN, PAD, BOS, EOS = 10, 5, 0, 8, 9


def per_client_reference(model_fn, weights, arrays, client_ids, pad_id=None, batch_size=256):
  """The old per-client path: each client's rows in batches of 256 through the model's own `forward_pass`;
  loss_sum += batch loss * rows (float64 here), correct / predictions skip targets equal to `pad_id`.
  (A TF1 graph and session: building a Keras LSTM eagerly is ~10x slower.)"""
  x0, y0 = arrays[client_ids[0]]
  with tf.Graph().as_default():
    model = model_fn()
    x_in = tf.compat.v1.placeholder(tf.as_dtype(x0.dtype), [None] + list(x0.shape[1:]))
    y_in = tf.compat.v1.placeholder(tf.as_dtype(y0.dtype), [None] + list(y0.shape[1:]))
    output = model.forward_pass(collections.OrderedDict(x=x_in, y=y_in), training=False)
    variables = tf.nest.flatten(tff.learning.models.ModelWeights.from_model(model))
    assign = [v.assign(w) for v, w in zip(variables, tf.nest.flatten(weights))]
    init = tf.compat.v1.variables_initializer(variables + list(model.local_variables))
    with tf.compat.v1.Session() as sess:
      sess.run(init)
      sess.run(assign)
      out = []
      for cid in client_ids:
        x, y = arrays[cid]
        sums = np.zeros(4)
        for s in range(0, len(y), batch_size):
          xb, yb = x[s:s + batch_size], y[s:s + batch_size]
          loss, predictions = sess.run([output.loss, output.predictions], {x_in: xb, y_in: yb})
          yb = yb.astype(np.int64)
          counted = np.ones_like(yb, bool) if pad_id is None else yb != pad_id
          hits = (np.argmax(predictions, -1) == yb) & counted
          sums += [float(loss) * len(yb), hits.sum(), len(yb), counted.sum()]
        out.append(collections.OrderedDict(zip(EVAL_KEYS, sums)))
  return out


def assert_sums_close(got, want, rtol=1e-5):
  assert len(got) == len(want)
  for g, w in zip(got, want):
    np.testing.assert_allclose([g[k] for k in EVAL_KEYS], [w[k] for k in EVAL_KEYS], rtol=rtol, atol=1e-6)


def token_rows(rng, num_snippets):
  """x, y int64 [n, SEQ_LEN]: snippets of random length wrapped in BOS/EOS, zero-padded to multiples of L+1."""
  rows = []
  for _ in range(num_snippets):
    snippet = np.concatenate([[BOS], rng.integers(1, BOS, rng.integers(1, 9)), [EOS]])
    snippet = np.concatenate([snippet, np.zeros(-len(snippet) % (SEQ_LEN + 1), np.int64)])
    rows.extend(snippet.reshape(-1, SEQ_LEN + 1))
  rows = np.array(rows, np.int64).reshape(-1, SEQ_LEN + 1)
  return rows[:, :-1], rows[:, 1:]


def token_task(train_snippets=(2, 4, 3), test_snippets=(1, 3, 0), seed=0) -> tasks_real.SequenceTask:
  """A `SequenceTask` (the Shakespeare task's class) over generated token rows; a 0 makes a client without test."""
  char_lstm.register()
  rng = np.random.default_rng(seed)
  ids = [f'role{i}' for i in range(len(train_snippets))]
  train = {c: token_rows(rng, k) for c, k in zip(ids, train_snippets)}
  test = {c: token_rows(rng, k) if k else (np.zeros([0, SEQ_LEN], np.int64),) * 2 for c, k in zip(ids, test_snippets)}
  fed = tasks_real.TokenArrays(client_ids=ids, train=train, test=test, num_classes=VOCAB)
  return tasks_real.SequenceTask('tokens', fed, char_lstm.MODEL_NAME, (SEQ_LEN,), VOCAB, pad_id=PAD)


def initial_weights(task, seed=0) -> tff.learning.models.ModelWeights:
  """Seeded initial weights of `task.keras_model()`, built in a TF1 graph (fast for the LSTM)."""
  with tf.Graph().as_default():
    tf.compat.v1.set_random_seed(seed)
    model = task.keras_model()
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.variables_initializer(model.weights))
      return tff.learning.models.ModelWeights(trainable=sess.run(model.trainable_weights),
                                              non_trainable=sess.run(model.non_trainable_weights))
