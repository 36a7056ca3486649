"""Ditto (Li et al. 2021, "Ditto: Fair and Robust Federated Learning Through Personalization", Algorithm 1), as an
algorithm definition.

The global model w is trained by FedAvg; each client also keeps a personal model v_k (its client state:
OrderedDict(personal=<trainable weights>, initialized=float32 0/1); a client never seen starts from the global
model). A round with global model w:

  client k:  global part:   w_k <- local steps from w on F_k                (exactly FedAvg's client step)
             personal part: v_k <- local steps from v_k on F_k(v) + (lam/2) ||v - w||^2, over the same batches
                            (gradient grad F_k(v) + lam (v - w); the same optimizer, fresh state); stores v_k
             sends w - w_k (the FedAvg update)
  server:    FedAvg: w <- w - lr_g * mean_k (w - w_k)  (any aggregator / server optimizer)

lam = 0 gives local training continued across rounds; a large lam pulls v_k to the global model. The personal
model is what a client deploys (`personal_weights`). Training metrics are the global part's (the personal pass does
not count in them). Both passes run with the components' local options (pruning masks, DP-SGD), so the deployed
model obeys them too. A personal pass with a non-finite result or no data keeps the previous v_k.
"""

import collections
import dataclasses

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import definition


@dataclasses.dataclass(frozen=True)
class Ditto(definition.Algorithm):
  """`lam` >= 0: the personal models' pull towards the global model."""
  lam: float
  name = 'ditto'

  def validate(self, num_clients=None):
    del num_clients
    if not self.lam >= 0:
      raise ValueError(f'lam must be >= 0; got {self.lam}.')

  def client_state(self, model):
    return collections.OrderedDict(personal=definition.zeros_like_trainable(model),
                                   initialized=tf.constant(0.0, tf.float32))

  def personal_weights(self, weights, state):
    """The client's personal model v_k, or the global model if it has none yet (TF)."""
    trainable = definition.own_or_global(state['initialized'], state['personal'], weights.trainable)
    return tff.learning.models.ModelWeights(trainable=trainable, non_trainable=weights.non_trainable)

  def client_update(self, ctx):
    out = ctx.train()
    start = self.personal_weights(ctx.weights, ctx.state)
    personal = ctx.train(start, weighting=tff.learning.ClientWeighting.UNIFORM, proximal_mu=float(self.lam),
                         anchor=ctx.weights, track_metrics=False)
    ok = tf.logical_and(personal['finite'] > 0, personal['num_steps'] > 0)
    new_v = [v - d for v, d in zip(start.trainable, personal['update'])]  # d = 0 without a finite step: v kept.
    state = collections.OrderedDict(
        personal=new_v, initialized=tf.maximum(ctx.state['initialized'], tf.cast(ok, tf.float32)))
    return definition.client_output(out, state=state)
