"""Client-drift diagnostics: why did the loss go up? Per-client figures are computed inside the computation.

Two parts, both stock TFF extension points:

* `DriftMeasurementFactory(inner)`: a weighted `tff.aggregators` factory that runs `inner`, broadcasts its
  aggregate `a` back to the clients and measures, over the cohort's updates u_k (flattened):
  `update_norm_mean`, `update_norm_max` (||u_k||), `aggregate_norm` (||a||), `cosine_mean`, `cosine_min`
  (cos(u_k, a); 0 when either norm is 0). Measurements: inner's own fields plus `drift=OrderedDict(...)`.
* `with_client_gradients(process, model_fn)`: a `LearningProcess` whose `next` also has every client compute, at the
  broadcast model w, its full-data gradient g_k (mean over its examples) and loss L_k before training; it reports
  under `metrics['drift']`: `gradient_dissimilarity` = mean_k ||g_k - g||^2 with g = mean_k g_k (the FedProx
  dissimilarity estimate, clients weighted uniformly), `gradient_norm_sq_mean` = mean_k ||g_k||^2, and the spread of
  client losses `loss_mean`, `loss_std` (population), `loss_min`, `loss_max`.

`DriftHook` (a training-loop hook) adds `drift/loss_change` (train loss minus the previous round's) and logs a warning
naming the likely cause (`likely_cause`) when the loss rises by more than a threshold.
"""

import collections
from typing import Any, Optional

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import client_work as client_work_lib
from tff_fl.simulation import training_loop

DRIFT_FIGURES = ('update_norm_mean', 'update_norm_max', 'aggregate_norm', 'cosine_mean', 'cosine_min')


def _flat(value) -> tf.Tensor:
  return tf.concat([tf.reshape(tf.cast(t, tf.float32), [-1]) for t in tf.nest.flatten(value)], axis=0)


def _merge(measurements, extra_name: str, extra) -> Any:
  """Federated OrderedDict(fields of `measurements`..., extra_name=extra) at SERVER."""
  member = measurements.type_signature.member
  fields = collections.OrderedDict()
  if isinstance(member, tff.StructType):
    for name, _ in tff.structure.iter_elements(member):
      fields[name] = measurements[name]
  fields[extra_name] = extra
  return tff.federated_zip(fields)


class DriftMeasurementFactory(tff.aggregators.WeightedAggregationFactory):
  """Wraps a weighted (or unweighted) aggregation factory; adds update-norm and cosine measurements."""

  def __init__(self, inner=None):
    inner = inner or tff.aggregators.MeanFactory()
    if isinstance(inner, tff.aggregators.UnweightedAggregationFactory):
      inner = tff.aggregators.as_weighted_aggregator(inner)
    if not isinstance(inner, tff.aggregators.WeightedAggregationFactory):
      raise TypeError(f'inner must be a tff.aggregators factory; got {type(inner).__name__}.')
    self._inner = inner

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    inner = self._inner.create(value_type, weight_type)

    @tff.tensorflow.computation(value_type, value_type)
    def client_figures(update, aggregate):
      u, a = _flat(update), _flat(aggregate)
      nu, na = tf.norm(u), tf.norm(a)
      cos = tf.math.divide_no_nan(tf.reduce_sum(u * a), nu * na)
      return collections.OrderedDict(norm=nu, cosine=cos)

    @tff.tensorflow.computation(value_type)
    def norm(aggregate):
      return tf.norm(_flat(aggregate))

    @tff.federated_computation(inner.initialize.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS),
                               tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      out = inner.next(state, value, weight)
      figures = tff.federated_map(client_figures, (value, tff.federated_broadcast(out.result)))
      drift = tff.federated_zip(collections.OrderedDict(
          update_norm_mean=tff.federated_mean(figures.norm), update_norm_max=tff.federated_max(figures.norm),
          aggregate_norm=tff.federated_map(norm, out.result),
          cosine_mean=tff.federated_mean(figures.cosine), cosine_min=tff.federated_min(figures.cosine)))
      return tff.templates.MeasuredProcessOutput(out.state, out.result, _merge(out.measurements, 'drift', drift))

    return tff.templates.AggregationProcess(inner.initialize, next_fn)


def build_client_gradient_fn(model: tff.learning.models.VariableModel):
  """`tf.function` (ModelWeights, dataset) -> OrderedDict(gradient (trainable structure), loss, num_examples):
  the example-weighted mean gradient and loss of the client's data at the given weights (no update)."""

  @tf.function
  def client_gradient(weights, dataset):
    model_weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda v, w: v.assign(w), model_weights, weights)

    def reduce_fn(acc, batch):
      with tf.GradientTape() as tape:
        out = model.forward_pass(batch, training=False)
      rows = tf.cast(tf.shape(out.predictions)[0], tf.float32)
      grads = tuple(tape.gradient(out.loss, model_weights.trainable))
      return collections.OrderedDict(
          gradient=tf.nest.map_structure(lambda a, g: a + g * rows, acc['gradient'], grads),
          loss=acc['loss'] + tf.cast(out.loss, tf.float32) * rows, num_examples=acc['num_examples'] + rows)

    zero = collections.OrderedDict(gradient=tuple(tf.zeros_like(w) for w in weights.trainable),
                                   loss=tf.constant(0.0), num_examples=tf.constant(0.0))
    acc = dataset.reduce(zero, reduce_fn)
    n = tf.maximum(acc['num_examples'], 1.0)
    return collections.OrderedDict(gradient=tf.nest.map_structure(lambda g: g / n, acc['gradient']),
                                   loss=acc['loss'] / n, num_examples=acc['num_examples'])

  return client_gradient


def with_client_gradients(process: tff.learning.templates.LearningProcess,
                          model_fn: client_work_lib.ModelFn) -> tff.learning.templates.LearningProcess:
  """`process` whose metrics gain `drift` (gradient dissimilarity and client-loss spread at the broadcast model)."""
  weights_type, data_type, _ = client_work_lib.model_types(model_fn)
  state_type, client_data_type = process.next.type_signature.parameter
  grad_type = weights_type.trainable

  @tff.tensorflow.computation(weights_type, data_type)
  def client_gradient(weights, dataset):
    return build_client_gradient_fn(model_fn())(weights, dataset)

  @tff.tensorflow.computation(grad_type, grad_type)
  def sq_distance(gradient, mean_gradient):
    return tf.reduce_sum(tf.square(_flat(gradient) - _flat(mean_gradient)))

  @tff.tensorflow.computation(grad_type)
  def sq_norm(gradient):
    return tf.reduce_sum(tf.square(_flat(gradient)))

  @tff.tensorflow.computation(tf.float32)
  def square(x):
    return x * x

  @tff.tensorflow.computation(tf.float32, tf.float32)
  def std(mean, mean_sq):
    return tf.sqrt(tf.maximum(mean_sq - tf.square(mean), 0.0))

  @tff.federated_computation(state_type, client_data_type)
  def next_fn(state, client_data):
    weights = tff.federated_map(process.get_model_weights, state)
    diag = tff.federated_map(client_gradient, (tff.federated_broadcast(weights), client_data))
    mean_gradient = tff.federated_mean(diag.gradient)
    loss_mean = tff.federated_mean(diag.loss)
    loss_sq_mean = tff.federated_mean(tff.federated_map(square, diag.loss))
    drift = tff.federated_zip(collections.OrderedDict(
        gradient_dissimilarity=tff.federated_mean(tff.federated_map(
            sq_distance, (diag.gradient, tff.federated_broadcast(mean_gradient)))),
        gradient_norm_sq_mean=tff.federated_mean(tff.federated_map(sq_norm, diag.gradient)),
        loss_mean=loss_mean, loss_std=tff.federated_map(std, (loss_mean, loss_sq_mean)),
        loss_min=tff.federated_min(diag.loss), loss_max=tff.federated_max(diag.loss)))
    out = process.next(state, client_data)
    return tff.learning.templates.LearningProcessOutput(out.state, _merge(out.metrics, 'drift', drift))

  return tff.learning.templates.LearningProcess(
      process.initialize, next_fn, process.get_model_weights, process.set_model_weights,
      get_hparams_fn=process.get_hparams, set_hparams_fn=process.set_hparams)


def likely_cause(current: dict[str, float], history: list[dict[str, float]]) -> str:
  """Names what stands out this round vs the median of earlier rounds (figures as in the module docstring)."""
  def ratio(key):
    past = [h[key] for h in history if h.get(key) is not None and np.isfinite(h[key])]
    if current.get(key) is None or not past or np.median(past) <= 0:
      return None
    return current[key] / np.median(past)

  signals = []
  r = ratio('gradient_dissimilarity')
  if r is not None and r > 1.5:
    signals.append((r, f'high client dissimilarity (gradient dissimilarity {current["gradient_dissimilarity"]:.4g}, '
                       f'{r:.1f}x its median so far)'))
  r = ratio('update_norm_max')
  if r is not None and r > 1.5:
    signals.append((r, f'large client update norms (max {current["update_norm_max"]:.4g}, {r:.1f}x its median so far)'))
  cos = current.get('cosine_mean')
  if cos is not None and cos < 0.2:
    signals.append((1.5 + (0.2 - cos) * 5, f'clients pulling in different directions (mean cosine to the aggregate '
                                           f'{cos:.2f}, min {current.get("cosine_min", float("nan")):.2f})'))
  r = ratio('loss_std')
  if r is not None and r > 1.5:
    signals.append((r, f'widely spread client losses (std {current["loss_std"]:.4g}, {r:.1f}x its median so far)'))
  if not signals:
    return 'no drift figure stands out (try a lower learning rate, or more clients per round)'
  return max(signals)[1]


class DriftHook(training_loop.RoundHook):
  """Adds `drift/loss_change`; logs a warning naming the likely cause when the train loss rises by > threshold."""
  name = 'drift'

  def __init__(self, warning_threshold: float):
    if warning_threshold < 0:
      raise ValueError(f'--drift_warning_threshold must be >= 0; got {warning_threshold}.')
    self.threshold = warning_threshold
    self.previous_loss: Optional[float] = None
    self.history: list[dict[str, float]] = []
    self.warnings: list[str] = []

  def after_round(self, round_num, output, row) -> None:
    del output
    figures = {k.split('/')[-1]: v for k, v in row.items()
               if k.startswith(('drift/', 'aggregator/drift/')) and isinstance(v, (int, float))}
    loss = row.get('train_loss')
    if self.previous_loss is not None and loss is not None:
      change = loss - self.previous_loss
      row['drift/loss_change'] = change
      if change > self.threshold:
        message = (f'round {round_num}: train loss rose by {change:.4g} (> --drift_warning_threshold '
                   f'{self.threshold}); likely cause: {likely_cause(figures, self.history)}')
        logging.warning(message)
        self.warnings.append(message)
    self.previous_loss = loss
    self.history.append(figures)

  def checkpoint_arrays(self) -> dict[str, np.ndarray]:
    return {'previous_loss': np.array(np.nan if self.previous_loss is None else self.previous_loss)}

  def restore_arrays(self, arrays) -> None:
    if 'previous_loss' in arrays and np.isfinite(arrays['previous_loss']):
      self.previous_loss = float(arrays['previous_loss'])

  def summary(self) -> dict[str, Any]:
    return {'drift_warnings': len(self.warnings)}
