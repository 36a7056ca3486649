"""Ditto (Li et al. 2021, "Ditto: Fair and Robust Federated Learning Through Personalization", Algorithm 1).

A `StatefulProcess`. The global model w is trained by FedAvg; each client also keeps a personal model v_k (its
client state: OrderedDict(personal=<trainable weights>, initialized=float32 0/1); a client never seen starts from
the global model). A round with global model w:

  client k:  global part:   w_k <- local SGD from w on F_k                  (exactly FedAvg's client step)
             personal part: v_k <- local SGD from v_k on F_k(v) + (lam/2) ||v - w||^2, over the same batches
                            (gradient grad F_k(v) + lam (v - w); the same optimizer, fresh state); stores v_k
             sends w - w_k (the FedAvg update)
  server:    FedAvg: w <- w - lr_g * mean_k (w - w_k)  (any aggregator / server optimizer)

lam = 0 gives local training continued across rounds; a large lam pulls v_k to the global model. The personal
model is what a client deploys: `personal_model` / `fedper.build_client_state_eval` evaluate it. Training metrics
are the global part's (as FedAvg's). A personal step with a non-finite result keeps the previous v_k.
"""

import collections
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import client_work as client_work_lib
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import stateful_process

ClientWeighting = tff.learning.ClientWeighting


def personal_model(weights: tff.learning.models.ModelWeights, client_state) -> tff.learning.models.ModelWeights:
  """TF: the client's personal model v_k, or the global model if it has none yet."""
  trainable = [tf.where(client_state['initialized'] > 0, own, glob)
               for own, glob in zip(client_state['personal'], weights.trainable)]
  return tff.learning.models.ModelWeights(trainable=trainable, non_trainable=weights.non_trainable)


def build_ditto(model_fn: client_work_lib.ModelFn, client_optimizer: tff.learning.optimizers.Optimizer,
                lam: float, server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *,
                client_weighting: ClientWeighting = ClientWeighting.NUM_EXAMPLES,
                model_aggregator: Optional[fed_avg.AnyFactory] = None,
                metrics_aggregator=None) -> stateful_process.StatefulProcess:
  """Ditto (see module docstring); `lam` >= 0 is the personal models' pull towards the global model."""
  if not lam >= 0:
    raise ValueError(f'lam (--ditto_lambda) must be >= 0; got {lam}.')
  lam = float(lam)

  def client_state_fn():
    personal = [tf.zeros(v.shape, v.dtype) for v in model_fn().trainable_variables]
    return collections.OrderedDict(personal=personal, initialized=tf.constant(0.0, tf.float32))

  def client_fn(weights, extra, client_state, dataset):
    del extra
    out, unfinalized = stateful_process.build_local_sgd_fn(model_fn(), weighting=client_weighting)(
        client_optimizer, weights, dataset)
    personal_train = stateful_process.build_local_sgd_fn(model_fn(), weighting=ClientWeighting.UNIFORM,
                                                         proximal_mu=lam)
    start = personal_model(weights, client_state)
    personal_out, _ = personal_train(client_optimizer, start, dataset, anchor=weights)
    ok = tf.logical_and(personal_out['finite'] > 0, personal_out['num_steps'] > 0)
    new_v = [tf.where(ok, v - d, v) for v, d in zip(start.trainable, personal_out['update'])]
    out['client_state'] = collections.OrderedDict(
        personal=new_v, initialized=tf.maximum(client_state['initialized'], tf.cast(ok, tf.float32)))
    out['upload'] = tf.constant(0.0, tf.float32)
    return out, unfinalized

  return stateful_process.build_stateful_process(
      model_fn, client_fn=client_fn, client_state_fn=client_state_fn, server_optimizer=server_optimizer,
      model_aggregator=model_aggregator, metrics_aggregator=metrics_aggregator)
