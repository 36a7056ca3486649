"""Client-drift diagnostics: why did the loss go up? An `Extension`: every figure is computed inside the round.

`DriftMeasurements()` composes with every algorithm. Per reporting client k, at the broadcast model w, it computes
over the client's round batches (its local data, augmented as training sees it) the full-data gradient g_k (mean
over its examples) and loss L_k, without touching the model's training metrics; u_k is the update the client sends
to the aggregator (after any attack) and a the aggregator's result. Through the engine's aggregate pass (a second
map over the clients with the broadcast aggregate and the cohort mean g = mean_k g_k) it reports under `drift/`:

  update_norm_mean, update_norm_max    mean_k / max_k ||u_k||
  aggregate_norm                       ||a||
  cosine_mean, cosine_min              mean_k / min_k cos(u_k, a)  (0 when either norm is 0)
  gradient_dissimilarity               mean_k ||g_k - g||^2  (the FedProx dissimilarity estimate, uniform weights)
  gradient_norm_sq_mean                mean_k ||g_k||^2
  loss_mean, loss_std, loss_min, loss_max   spread of L_k (std: population)

Means are uniform over the reporting clients (NaN for a round nobody reported). `tff_fl.simulation.drift_hook.DriftHook`
(a training-loop hook) adds `drift/loss_change` (train loss minus the previous round's) and logs a warning naming
the likely cause (`likely_cause`) when the loss rises by more than a threshold.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import extension
from tff_fl.algorithms import local_training

FIGURES = ('update_norm_mean', 'update_norm_max', 'aggregate_norm', 'cosine_mean', 'cosine_min',
           'gradient_dissimilarity', 'gradient_norm_sq_mean', 'loss_mean', 'loss_std', 'loss_min', 'loss_max')


def _flat(value) -> tf.Tensor:
  return tf.concat([tf.reshape(tf.cast(t, tf.float32), [-1]) for t in tf.nest.flatten(value)], axis=0)


def gradient_at(model: tff.learning.models.VariableModel, weights, data) -> collections.OrderedDict:
  """OrderedDict(gradient (trainable structure), loss, num_examples): the example-weighted mean gradient and loss
  of `data` (`.reduce` as tf.data) at `weights` (ModelWeights), in the current graph. No update is made; the model's
  metric variables are left as they were (its weights are left at `weights`). On the engine's client axis, the
  client's packed batches (`client_axis.ClientAxisModel.gradient_call`)."""
  if hasattr(model, 'gradient_call'):
    out = model.gradient_call(weights, local_training.LocalOptions(), track_metrics=False)
    return collections.OrderedDict(gradient=out['gradient'], loss=out['loss'], num_examples=out['num_examples'])
  model_weights = tff.learning.models.ModelWeights.from_model(model)
  saved_metrics = [v.read_value() for v in model.local_variables]
  with tf.control_dependencies(saved_metrics):
    assign = tf.nest.map_structure(lambda v, w: v.assign(w), model_weights, weights)

  def reduce_fn(acc, batch):
    with tf.GradientTape() as tape:
      out = model.forward_pass(batch, training=False)
    rows = tf.cast(tf.shape(out.predictions)[0], tf.float32)
    grads = tape.gradient(out.loss, model_weights.trainable, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return collections.OrderedDict(
        gradient=tf.nest.map_structure(lambda a, g: a + g * rows, acc['gradient'], grads),
        loss=acc['loss'] + tf.cast(out.loss, tf.float32) * rows, num_examples=acc['num_examples'] + rows)

  with tf.control_dependencies(tf.nest.flatten(assign)):
    zero = collections.OrderedDict(gradient=tf.nest.map_structure(tf.zeros_like, model_weights.trainable),
                                   loss=tf.constant(0.0), num_examples=tf.constant(0.0))
  acc = data.reduce(zero, reduce_fn)
  with tf.control_dependencies(tf.nest.flatten(acc)):
    restore = [v.assign(s) for v, s in zip(model.local_variables, saved_metrics)]
  with tf.control_dependencies(restore):
    n = tf.maximum(tf.identity(acc['num_examples']), 1.0)
  return collections.OrderedDict(gradient=tf.nest.map_structure(lambda g: g / n, acc['gradient']),
                                 loss=acc['loss'] / n, num_examples=acc['num_examples'])


class DriftMeasurements(extension.Extension):
  """Per-client drift figures and their cohort summary (module docstring)."""

  name = 'drift'
  _PER_CLIENT = ('update_norm', 'cosine', 'aggregate_norm', 'gradient_norm_sq', 'gradient_distance_sq', 'loss')

  def vector_size(self, model, update_size):
    return 1 + update_size + sum(int(np.prod(v.shape)) for v in model.trainable_variables)  # [L_k, u_k, g_k]

  def client_vector(self, ctx, output, update, info):
    del output, info
    at_broadcast = gradient_at(ctx.model, ctx.weights, ctx.data)
    return tf.concat([[at_broadcast['loss']], _flat(update), _flat(at_broadcast['gradient'])], axis=0)

  def aggregate_measurement_names(self):
    return self._PER_CLIENT

  def aggregate_measurements(self, vector, mean_vector, aggregate):
    a = _flat(aggregate)
    d = a.shape[0]  # The update's flat size; the gradient (trainable weights) follows it.
    loss, u, g = vector[0], vector[1:1 + d], vector[1 + d:]
    nu, na = tf.norm(u), tf.norm(a)
    return collections.OrderedDict(
        update_norm=nu, cosine=tf.math.divide_no_nan(tf.reduce_sum(u * a), nu * na), aggregate_norm=na,
        gradient_norm_sq=tf.reduce_sum(tf.square(g)),
        gradient_distance_sq=tf.reduce_sum(tf.square(g - mean_vector[1 + d:])), loss=loss)

  def summarize(self, per_client):
    if len(per_client['loss']) == 0:  # pylint: disable=g-explicit-length-test
      return collections.OrderedDict((k, float('nan')) for k in FIGURES)
    v = {k: np.asarray(per_client[k], np.float64) for k in self._PER_CLIENT}
    return collections.OrderedDict(
        update_norm_mean=v['update_norm'].mean(), update_norm_max=v['update_norm'].max(),
        aggregate_norm=v['aggregate_norm'][0], cosine_mean=v['cosine'].mean(), cosine_min=v['cosine'].min(),
        gradient_dissimilarity=v['gradient_distance_sq'].mean(), gradient_norm_sq_mean=v['gradient_norm_sq'].mean(),
        loss_mean=v['loss'].mean(), loss_std=v['loss'].std(), loss_min=v['loss'].min(), loss_max=v['loss'].max())


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
