"""FedPer (Arivazhagan et al. 2019, "Federated Learning with Personalization Layers"), as an algorithm definition.

The trainable weights split into a shared base (all but the last `head_size` trainable variables) and a personal
head (the last `head_size`, e.g. the final Dense layer's kernel and bias). Client state:
OrderedDict(head=<head variables>, initialized=float32 0/1); a client never seen starts from the server's head.
A round:

  client i:  starts from (server base, own head), trains all layers locally (any client optimizer);
             stores its trained head; sends update = (base_x - base_i, head_x - head_i)
  server:    base <- base - lr_g * mean(base_x - base_i)          (FedAvg on the base)
             head <- head - lr_g * mean(head_x - head_i)          (= mean of the cohort's heads at lr_g = 1)

The server head only initializes new clients and gives the "global" model; each client keeps its own head and
deploys (server base, own head) (`personal_weights`). A non-finite local update sends 0 (weight 0) and leaves the
head as it started. `head_size_from_layers` turns "the last N layers with weights" into `head_size`.
"""

import collections
import dataclasses

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import definition


def head_size_from_layers(keras_model: tf.keras.Model, head_layers: int) -> int:
  """Number of trailing trainable variables that belong to the last `head_layers` layers with weights."""
  layers = [l for l in keras_model.layers if l.trainable_weights]
  if len(layers) < 2:
    raise ValueError(f'algorithm=fedper needs a model with >= 2 layers with weights (e.g. model=2nn); this one '
                     f'has {len(layers)}.')
  if not isinstance(head_layers, int) or not 1 <= head_layers < len(layers):
    raise ValueError(f'fedper_head_layers must be an int in [1, {len(layers) - 1}] (the model has {len(layers)} '
                     f'layers with weights; the base needs at least one); got {head_layers!r}.')
  return sum(len(l.trainable_weights) for l in layers[-head_layers:])


@dataclasses.dataclass(frozen=True)
class FedPer(definition.Algorithm):
  """`head_size`: trailing trainable variables kept per client (1 <= head_size < number of trainable variables)."""
  head_size: int
  name = 'fedper'

  def validate(self, num_clients=None):
    del num_clients
    if isinstance(self.head_size, bool) or not isinstance(self.head_size, int) or self.head_size < 1:
      raise ValueError(f'head_size must be an int >= 1; got {self.head_size!r}.')

  def _check(self, num_variables: int) -> None:
    if not self.head_size < num_variables:
      raise ValueError(f'head_size must be an int in [1, {num_variables - 1}] (trailing trainable variables); '
                       f'got {self.head_size!r}.')

  def client_state(self, model):
    self._check(len(model.trainable_variables))
    head = [tf.zeros(v.shape, v.dtype) for v in model.trainable_variables[-self.head_size:]]
    return collections.OrderedDict(head=head, initialized=tf.constant(0.0, tf.float32))

  def personal_weights(self, weights, state):
    """ModelWeights with the server base and the client's head (the server head if it has none yet) (TF)."""
    server_head = weights.trainable[-self.head_size:]
    head = definition.own_or_global(state['initialized'], state['head'], server_head)
    return tff.learning.models.ModelWeights(trainable=list(weights.trainable[:-self.head_size]) + head,
                                            non_trainable=weights.non_trainable)

  def client_update(self, ctx):
    n = self.head_size
    start = self.personal_weights(ctx.weights, ctx.state)
    out = ctx.train(start)
    new_head = [h - d for h, d in zip(start.trainable[-n:], out['update'][-n:])]
    finite = out['finite'] > 0
    head_update = [tf.where(finite, g - h, tf.zeros_like(h)) for g, h in zip(ctx.weights.trainable[-n:], new_head)]
    state = collections.OrderedDict(head=new_head, initialized=tf.constant(1.0, tf.float32))
    return definition.client_output(out, update=list(out['update'][:-n]) + head_update, state=state)
