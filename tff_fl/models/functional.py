"""The functional form of a `tff.learning` Keras model, for clients run vectorised over a client axis.

A `tff.learning.models.VariableModel` keeps its weights in variables, so one model can train one client at a time.
`from_model(model)` reads the Keras model inside a model made by `tff.learning.models.from_keras_model` and returns
a `FunctionalModel`: the same forward pass and loss as pure functions of weight tensors, which `tf.vectorized_map`
can map over clients (FedJAX's `for_each_client`). Also exact: the model's metric variables' increments for a
masked batch (`metric_increments`), so the round's unfinalized metrics equal the sequential ones.

  fm = functional.from_model(model)          # raises Unsupported(reason) for what it cannot express
  logits = fm.apply(trainable, x)            # trainable: list in `model.trainable_variables` order; x [B, ...]
  losses = fm.per_example_loss(y, logits)    # [B]; the batch loss is their mean over the real examples
  logits = fm.apply_stacked(stacked, xs)     # C clients at once: every weight [C, ...], xs [C, B, ...]
  logits = fm.apply_tapped(trainable, xs, taps)  # C clients from one set of weights; fm.dense_gradients(...)

Supported: `tf.keras.Sequential` models of InputLayer, Flatten, Reshape, Dense, Conv2D (channels_last, no
groups), MaxPooling2D, AveragePooling2D, Activation, ReLU and Dropout(rate=0), with no regularization losses and no
non-trainable weights; one Keras loss whose per-example values are [B]; metrics that are Keras
`MeanMetricWrapper`s (accuracy-like) besides TFF's loss / num_examples / num_batches counters.
"""

import dataclasses
from typing import Callable, Sequence

import tensorflow as tf


class Unsupported(ValueError):
  """The model cannot be expressed functionally (the message says why); clients then run sequentially."""


_ACTIVATIONS = {'linear': tf.identity, 'relu': tf.nn.relu, 'sigmoid': tf.sigmoid, 'tanh': tf.tanh,
                'softmax': tf.nn.softmax}


def _activation(fn) -> Callable:
  name = getattr(fn, '__name__', None)
  if name not in _ACTIVATIONS:
    raise Unsupported(f'activation {name!r} is not one of {sorted(_ACTIVATIONS)}')
  return _ACTIVATIONS[name]


def _grouped_conv(x, kernel, strides, padding, dilations):
  """Per-client convolutions as one grouped convolution: x [C, B, H, W, I], kernel [C, kh, kw, I, O] ->
  [C, B, H', W', O] (clients become channel groups: group c reads channels c*I.. and writes c*O..)."""
  c, b = tf.shape(x)[0], tf.shape(x)[1]
  h, w, i = x.shape[2], x.shape[3], x.shape[4]
  kh, kw, o = kernel.shape[1], kernel.shape[2], kernel.shape[4]
  xt = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), [b, h, w, c * i])
  kt = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [kh, kw, i, c * o])
  y = tf.nn.conv2d(xt, kt, strides, padding, dilations=dilations)
  return tf.transpose(tf.reshape(y, [b, tf.shape(y)[1], tf.shape(y)[2], c, o]), [3, 0, 1, 2, 4])


def _merged(fn):
  """A per-example op on [B, ...] applied to [C, B, ...] by merging the client and batch axes."""
  def stacked(x):
    lead = tf.shape(x)[:2]
    y = fn(tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0)))
    return tf.reshape(y, tf.concat([lead, tf.shape(y)[1:]], 0))
  return stacked


def _layer_fn(layer, index_of) -> Callable:
  """(weights list, x, stacked) -> y for one Keras layer; `index_of(variable)` is its position among the
  trainables. stacked=False: x [B, ...] and weights of one model; True: x [C, B, ...] and every weight [C, ...]."""
  layers = tf.keras.layers
  kind = type(layer).__name__
  if isinstance(layer, layers.InputLayer):
    return lambda w, x, stacked: x
  if isinstance(layer, layers.Flatten):
    return lambda w, x, stacked: tf.reshape(x, tf.concat([tf.shape(x)[:1 + stacked], [-1]], 0))
  if isinstance(layer, layers.Reshape):
    shape = list(layer.target_shape)
    return lambda w, x, stacked: tf.reshape(x, tf.concat([tf.shape(x)[:1 + stacked], shape], 0))
  if isinstance(layer, layers.Dropout):
    if layer.rate:
      raise Unsupported(f'layer {layer.name} is Dropout with rate {layer.rate}')
    return lambda w, x, stacked: x
  if isinstance(layer, layers.Activation):
    act = _activation(layer.activation)
    return lambda w, x, stacked: act(x)
  if isinstance(layer, layers.ReLU):
    if layer.max_value is not None or float(layer.negative_slope) or float(layer.threshold):
      raise Unsupported(f'layer {layer.name} is a ReLU with max_value/negative_slope/threshold')
    return lambda w, x, stacked: tf.nn.relu(x)
  if isinstance(layer, (layers.Dense, layers.Conv2D)):
    act = _activation(layer.activation)
    k = index_of(layer.kernel)
    b = index_of(layer.bias) if layer.use_bias else None
    if isinstance(layer, layers.Dense):
      def linear(w, x, stacked):
        if x.shape.rank == 2 + stacked:
          return tf.matmul(x, w[k])  # Batched over clients when stacked.
        return tf.einsum('c...i,cio->c...o', x, w[k]) if stacked else tf.tensordot(x, w[k], axes=1)  # As Keras.
    else:
      if type(layer) is not layers.Conv2D or layer.data_format != 'channels_last' or layer.groups != 1:
        raise Unsupported(f'layer {layer.name} ({kind}) is not a channels_last Conv2D without groups')
      strides, dilations, padding = list(layer.strides), list(layer.dilation_rate), layer.padding.upper()

      def linear(w, x, stacked):
        if stacked:
          return _grouped_conv(x, w[k], strides, padding, dilations)
        return tf.nn.conv2d(x, w[k], strides, padding, dilations=dilations)
    if b is None:
      fn = lambda w, x, stacked: act(linear(w, x, stacked))
      if isinstance(layer, layers.Dense):
        fn.dense = (k, None, act)
      return fn

    def biased(w, x, stacked):
      y = linear(w, x, stacked)
      if not stacked:
        return act(tf.nn.bias_add(y, w[b]))
      bias = tf.reshape(w[b], tf.concat([tf.shape(w[b])[:1], tf.ones([y.shape.rank - 2], tf.int32),
                                         tf.shape(w[b])[1:]], 0))
      return act(y + bias)
    if isinstance(layer, layers.Dense):
      biased.dense = (k, b, act)
    return biased
  if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
    if layer.data_format != 'channels_last':
      raise Unsupported(f'layer {layer.name} is not channels_last')
    pool = tf.nn.max_pool2d if isinstance(layer, layers.MaxPooling2D) else tf.nn.avg_pool2d
    size, strides, padding = list(layer.pool_size), list(layer.strides), layer.padding.upper()
    one = lambda x: pool(x, size, strides, padding)
    return lambda w, x, stacked: _merged(one)(x) if stacked else one(x)
  raise Unsupported(f'layer {layer.name} ({kind}) has no functional form')


@dataclasses.dataclass(frozen=True)
class FunctionalModel:
  """Pure forward pass, per-example loss and metric increments of one `tff.learning` Keras model."""
  layer_fns: tuple
  loss: tf.keras.losses.Loss
  metrics: tuple  # Per metric of `model.get_metrics()`: (kind, variable dtypes, Keras fn or None).
  layer_kinds: tuple = ()  # Keras class name of each layer.
  shared_step: bool = False  # Every weighted layer is a Dense layer on [B, features] (`apply_tapped` applies).

  def apply(self, trainable: Sequence[tf.Tensor], x: tf.Tensor) -> tf.Tensor:
    """Logits [B, K] of inputs x [B, ...] under `trainable` (list, `model.trainable_variables` order)."""
    for fn in self.layer_fns:
      x = fn(trainable, x, False)
    return x

  def apply_stacked(self, trainable: Sequence[tf.Tensor], x: tf.Tensor) -> tf.Tensor:
    """Logits [C, B, K] of C clients' inputs x [C, B, ...], client c under its own weights (every `trainable`
    leaf [C, ...]): one batched matmul per Dense layer, one grouped convolution per Conv2D."""
    for fn in self.layer_fns:
      x = fn(trainable, x, True)
    return x

  def apply_tapped(self, trainable: Sequence[tf.Tensor], x: tf.Tensor, taps: list, stacked: bool = False) -> tf.Tensor:
    """Logits [C, B, K] of C clients' inputs x [C, B, ...], recording every Dense layer's input and pre-activation.
    stacked=False: under ONE set of weights, each Dense layer one matmul over all C*B rows (clients that start from
    the same weights); True: client c under its own weights (every leaf [C, ...], a batched matmul per layer).
    Every Dense layer appends (kernel index, bias index or None, its input [C, B, i], its pre-activation
    [C, B, o]) to `taps`, from which `dense_gradients` gives each client its own gradient. Needs `shared_step`."""
    for fn in self.layer_fns:
      dense = getattr(fn, 'dense', None)
      if dense is None:
        x = fn(trainable, x, True)
        continue
      k, b, act = dense
      if stacked:
        pre = tf.matmul(x, trainable[k])
        if b is not None:
          pre += trainable[b][:, tf.newaxis]
      else:
        lead = tf.shape(x)[:2]
        pre = tf.reshape(tf.matmul(tf.reshape(x, tf.stack([-1, tf.shape(x)[-1]])), trainable[k]),
                         tf.concat([lead, tf.shape(trainable[k])[1:]], 0))
        if b is not None:
          pre += trainable[b]
      taps.append((k, b, x, pre))
      x = act(pre)
    return x

  @staticmethod
  def dense_gradients(num_weights: int, taps: list, deltas: list) -> list:
    """Per-client gradients [C, ...] of every weight (trainable order) from `apply_tapped`'s taps and the gradients
    `deltas` of the clients' summed loss w.r.t. the taps' pre-activations: kernel_c = input_c^T delta_c (one
    batched matmul), bias_c = the sum of delta_c over the client's rows."""
    grads = [None] * num_weights
    for (k, b, inputs, _), delta in zip(taps, deltas):
      grads[k] = tf.matmul(inputs, delta, transpose_a=True)
      if b is not None:
        grads[b] = tf.reduce_sum(delta, axis=1)
    return grads

  def per_example_loss(self, y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """float32 [B] (or [C, B] for stacked clients' y [C, B], logits [C, B, K]): the Keras loss of each example
    (a batch loss is the mean of these)."""
    if logits.shape.rank == 3:
      flat = self.per_example_loss(tf.reshape(y, tf.concat([[-1], tf.shape(y)[2:]], 0)),
                                   tf.reshape(logits, [-1, logits.shape[-1]]))
      return tf.reshape(flat, tf.shape(logits)[:2])
    return tf.ensure_shape(tf.cast(self.loss.call(y, logits), tf.float32), [None])

  def metric_increments(self, y, logits, mask, batch_loss) -> list:
    """Per metric variable (flattened in `model.get_metrics()` order): what one batch adds to it, counting only the
    rows with mask 1 (float32 [B]); a batch with no real row adds nothing. `batch_loss`: its mean loss. Stacked
    clients (y [C, B], logits [C, B, K], mask [C, B], batch_loss [C]): the sum of their batches' increments."""
    sizes = tf.reduce_sum(mask, axis=-1)  # [] or [C]
    size = tf.reduce_sum(sizes)
    batches = tf.reduce_sum(tf.cast(sizes > 0, tf.float32))
    if logits.shape.rank == 3:
      y = tf.reshape(y, tf.concat([[-1], tf.shape(y)[2:]], 0))
      logits, mask = tf.reshape(logits, [-1, logits.shape[-1]]), tf.reshape(mask, [-1])
    out = []
    for kind, dtypes, fn in self.metrics:
      if kind == 'loss':
        values = [tf.reduce_sum(batch_loss * sizes), size]
      elif kind == 'num_examples':
        values = [size]
      elif kind == 'num_batches':
        values = [batches]
      else:
        matches = tf.reshape(tf.cast(fn(y, logits), tf.float32), [-1])
        values = [tf.reduce_sum(matches * mask), size]
      out.extend(tf.cast(v, d) for v, d in zip(values, dtypes))
    return out


def _metric_entry(metric):
  """(kind, dtypes, fn) for one metric of a `from_keras_model` model, or Unsupported."""
  dtypes = tuple(v.dtype for v in metric.variables)
  cls = type(metric).__name__
  if cls == '_WeightedMeanLossMetric' and len(dtypes) == 2:
    return 'loss', dtypes, None
  if cls in ('NumExamplesCounter', 'NumBatchesCounter') and len(dtypes) == 1:
    return ('num_examples' if cls == 'NumExamplesCounter' else 'num_batches'), dtypes, None
  if isinstance(metric, tf.keras.metrics.MeanMetricWrapper) and len(dtypes) == 2 and not metric._fn_kwargs:  # pylint: disable=protected-access
    return 'mean', dtypes, metric._fn  # pylint: disable=protected-access
  raise Unsupported(f'metric {metric.name} ({cls}) has no functional form')


def from_model(model) -> FunctionalModel:
  """The `FunctionalModel` of a `tff.learning.models.from_keras_model` model; Unsupported(reason) otherwise."""
  keras_model = getattr(model, '_keras_model', None)  # TFF's Keras wrapper keeps the Keras model here.
  loss_fns = getattr(model, '_loss_fns', None)
  if not isinstance(keras_model, tf.keras.Sequential) or not loss_fns:
    raise Unsupported('the model is not a tff.learning.models.from_keras_model model of a tf.keras.Sequential')
  if len(loss_fns) != 1 or not isinstance(loss_fns[0], tf.keras.losses.Loss):
    raise Unsupported('the model has several losses or a loss that is not a tf.keras.losses.Loss')
  if keras_model.losses:
    raise Unsupported('the model has regularization losses')
  if keras_model.non_trainable_variables:
    raise Unsupported('the model has non-trainable weights')
  positions = {v.ref(): i for i, v in enumerate(keras_model.trainable_variables)}

  def index_of(variable):
    if variable.ref() not in positions:
      raise Unsupported(f'weight {variable.name} is not trainable')
    return positions[variable.ref()]

  layer_fns = tuple(_layer_fn(layer, index_of) for layer in keras_model.layers)
  used = {index_of(w) for layer in keras_model.layers for w in layer.trainable_weights}
  if used != set(positions.values()):
    raise Unsupported('some trainable weights are not read by the supported layers')
  metrics = tuple(_metric_entry(m) for m in model.get_metrics())
  shared_step = all(not layer.trainable_weights or (hasattr(fn, 'dense') and len(layer.input_shape) == 2)
                    for layer, fn in zip(keras_model.layers, layer_fns))
  return FunctionalModel(layer_fns, loss_fns[0], metrics, tuple(type(l).__name__ for l in keras_model.layers),
                         shared_step)

