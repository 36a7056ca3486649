"""Centralized evaluation of the server model, as a training-loop hook.

`CentralEvalHook` copies `process.get_model_weights(state)` into one Keras model and evaluates it on all clients'
examples of a split concatenated (for mnist/fashion_mnist the test split is exactly the official 10k test set; for
FedProx's synthetic data the train split gives the paper's "training loss" of the global model). It adds the columns
`central_<split>_loss` and `central_<split>_accuracy` every `every` rounds and at the last round. For tasks with a
`pad_id` (next-token tasks) targets equal to it are excluded from both numbers, as TFF's baseline accuracy does.
"""

import collections
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import tasks as tasks_lib
from tff_fl.simulation import training_loop

SPLITS = ('test', 'train')


def central_arrays(task: tasks_lib.Task, split: str, max_examples: Optional[int] = None,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """All clients' `split` examples (x [N, ...], y [N, ...]); a fixed seeded subsample of `max_examples` if given."""
  x, y = task.data.centralized(split)
  if max_examples is not None and max_examples < y.shape[0]:
    keep = np.sort(np.random.default_rng(seed).permutation(y.shape[0])[:max_examples])
    x, y = x[keep], y[keep]
  return x, y


class CentralEvaluator:
  """Evaluates ModelWeights on fixed arrays: OrderedDict(loss, accuracy, num_targets) (masked by `pad_id`).

  The Keras model is built by `keras_fn` at the first call: a Keras model made before TFF traces its own models
  (in graph mode) cannot be called after that.
  """

  def __init__(self, keras_fn: Callable[[], tf.keras.Model], x: np.ndarray, y: np.ndarray,
               pad_id: Optional[int] = None, batch_size: int = 500):
    if y.shape[0] == 0:
      raise ValueError('central evaluation needs at least one example')
    self.keras_fn, self.x, self.y, self.pad_id, self.batch_size = keras_fn, x, y, pad_id, batch_size
    self.model, self._batch_sums = None, None

  def _build(self):
    self.model = self.keras_fn()
    spec = lambda a: tf.TensorSpec((None,) + a.shape[1:], tf.as_dtype(a.dtype))

    @tf.function(input_signature=[spec(self.x), spec(self.y)])
    def batch_sums(xb, yb):
      logits = self.model(xb, training=False)
      yb = tf.cast(yb, tf.int64)
      mask = (tf.ones_like(yb, tf.float32) if self.pad_id is None
              else tf.cast(tf.not_equal(yb, self.pad_id), tf.float32))
      losses = tf.keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True)
      correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1), yb), tf.float32)
      return tf.reduce_sum(losses * mask), tf.reduce_sum(correct * mask), tf.reduce_sum(mask)

    self._batch_sums = batch_sums

  def __call__(self, weights: tff.learning.models.ModelWeights) -> collections.OrderedDict:
    if self.model is None:
      self._build()
    weights.assign_weights_to(self.model)
    totals = np.zeros(3, np.float64)
    for start in range(0, self.y.shape[0], self.batch_size):
      end = start + self.batch_size
      totals += [float(v) for v in self._batch_sums(self.x[start:end], self.y[start:end])]
    loss_sum, correct, count = totals
    return collections.OrderedDict(loss=loss_sum / max(count, 1.0), accuracy=correct / max(count, 1.0),
                                   num_targets=int(count))


class CentralEvalHook(training_loop.RoundHook):
  """Adds central_<split>_{loss,accuracy} columns; `get_weights(state)` is usually `process.get_model_weights`."""
  name = 'central_eval'

  def __init__(self, task: tasks_lib.Task, get_weights: Callable[[Any], Any], splits: Sequence[str] = ('test',),
               every: int = 1, total_rounds: Optional[int] = None, max_examples: Optional[int] = None,
               seed: int = 0):
    for split in splits:
      if split not in SPLITS:
        raise ValueError(f"central_eval must be a comma-separated subset of {', '.join(SPLITS)}; got '{split}'.")
    if every < 1:
      raise ValueError(f'central evaluation period must be >= 1; got {every}.')
    self.get_weights, self.every, self.total_rounds = get_weights, every, total_rounds
    self.evaluators = collections.OrderedDict(
        (split, CentralEvaluator(task.keras_model, *central_arrays(task, split, max_examples, seed),
                                 pad_id=getattr(task, 'pad_id', None))) for split in splits)
    self.last: dict[str, Any] = {}
    self.last_round: Optional[int] = None

  def evaluate(self, round_num: int, state) -> dict[str, float]:
    weights = self.get_weights(state)
    columns = collections.OrderedDict()
    for split, evaluator in self.evaluators.items():
      result = evaluator(weights)
      columns[f'central_{split}_loss'] = result['loss']
      columns[f'central_{split}_accuracy'] = result['accuracy']
    self.last, self.last_round = columns, round_num
    return columns

  def after_round(self, round_num: int, output, row: dict[str, Any]) -> None:
    if round_num % self.every == 0 or round_num == self.total_rounds:
      row.update(self.evaluate(round_num, output.state))

  def on_train_end(self, process, state, summary: dict[str, Any]) -> None:
    del process
    if self.last_round != summary['rounds_completed']:
      self.evaluate(summary['rounds_completed'], state)

  def summary(self) -> dict[str, Any]:
    return dict(self.last)
