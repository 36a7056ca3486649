"""Per-client evaluation over one `tf.data` dataset per client: the path `tff_fl.engine.evaluation` replaces.

Superseded: the training loop, personal and fine-tuning evaluation use the packed evaluator
(`tff_fl.engine.evaluation`: same sums, `summarize` lives there). Kept only for `experiments/components/
hierarchical.py`'s cluster evaluation (the packed form is `Evaluator.evaluate_models(cluster_models, cluster_of)`) and
`experiments/eval_benchmark.py --old_clients` (the before/after timing); delete it with the former's last use.

`build_per_client_eval(model_fn)` is a federated computation (weights@SERVER, datasets@CLIENTS) ->
OrderedDict(loss_sum, correct, num_examples, num_predictions)@CLIENTS.
"""

import collections
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import client_work as client_work_lib


def build_per_client_eval(model_fn: client_work_lib.ModelFn, pad_id: Optional[int] = None) -> tff.Computation:
  """`pad_id`: for next-token tasks, targets equal to it count neither as predictions nor as correct."""
  weights_type, data_type, _ = client_work_lib.model_types(model_fn)

  @tff.tensorflow.computation(weights_type, data_type)
  def client_eval(weights, dataset):
    return build_client_eval_fn(model_fn(), pad_id)(weights, dataset)

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER), tff.FederatedType(data_type, tff.CLIENTS))
  def per_client_eval(weights, datasets):
    return tff.federated_map(client_eval, (tff.federated_broadcast(weights), datasets))

  return per_client_eval


def build_client_eval_fn(model: tff.learning.models.VariableModel, pad_id: Optional[int] = None):
  """A `tf.function` (ModelWeights, dataset) -> OrderedDict of per-client sums (see module docstring)."""

  @tf.function  # Automatic control dependencies: the weight assignment runs before the reduce.
  def client_eval(weights, dataset):
    model_weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda v, w: v.assign(w), model_weights, weights)

    def reduce_fn(acc, batch):
      out = model.forward_pass(batch, training=False)
      y = tf.cast(batch['y'], tf.int64)
      pred = tf.argmax(out.predictions, axis=-1, output_type=tf.int64)
      rows = tf.cast(tf.shape(out.predictions)[0], tf.float32)
      counted = tf.ones_like(y, tf.float32) if pad_id is None else tf.cast(tf.not_equal(y, pad_id), tf.float32)
      return collections.OrderedDict(
          loss_sum=acc['loss_sum'] + tf.cast(out.loss, tf.float32) * rows,
          correct=acc['correct'] + tf.reduce_sum(tf.cast(tf.equal(pred, y), tf.float32) * counted),
          num_examples=acc['num_examples'] + rows,
          num_predictions=acc['num_predictions'] + tf.reduce_sum(counted))

    zero = tf.constant(0.0)
    return dataset.reduce(collections.OrderedDict(loss_sum=zero, correct=zero, num_examples=zero,
                                                  num_predictions=zero), reduce_fn)

  return client_eval
