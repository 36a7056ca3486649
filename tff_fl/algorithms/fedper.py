"""Personalization: FedPer split models (Arivazhagan et al. 2019) and fine-tuning evaluation.

FedPer, a `StatefulProcess`. The trainable weights split into a shared base (all but the last `head_size` trainable
variables) and a personal head (the last `head_size`, e.g. the final Dense layer's kernel and bias).
Client state: OrderedDict(head=<head variables>, initialized=float32 0/1); a client never seen starts from the
server's head. A round:

  client i:  starts from (server base, own head), trains all layers locally (any client optimizer);
             stores its trained head; sends update = (base_x - base_i, head_x - head_i)
  server:    base <- base - lr_g * mean(base_x - base_i)          (FedAvg on the base)
             head <- head - lr_g * mean(head_x - head_i)          (= mean of the cohort's heads at lr_g = 1)

The server head only initializes new clients and gives the "global" model; each client keeps its own head.

Evaluation (federated computations returning per-client sums like `evaluation.build_per_client_eval`):
  `build_personalized_eval(model_fn, head_size)`: (weights@SERVER, client_states@CLIENTS, data@CLIENTS), each client
    evaluates (server base, own head).
  `build_finetune_eval(model_fn, optimizer)`: (weights@SERVER, train_data@CLIENTS, eval_data@CLIENTS), each client
    fine-tunes the global model on its train data (the dataset carries the k epochs) and evaluates the result.
"""

import collections
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import client_work as client_work_lib
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import stateful_process
from tff_fl.simulation import evaluation

ClientWeighting = tff.learning.ClientWeighting


def head_size_from_layers(keras_model: tf.keras.Model, head_layers: int) -> int:
  """Number of trailing trainable variables that belong to the last `head_layers` layers with weights."""
  layers = [l for l in keras_model.layers if l.trainable_weights]
  if len(layers) < 2:
    raise ValueError(f'--algorithm=fedper needs a model with >= 2 layers with weights (e.g. --model=2nn); this one '
                     f'has {len(layers)}.')
  if not isinstance(head_layers, int) or not 1 <= head_layers < len(layers):
    raise ValueError(f'--fedper_head_layers must be an int in [1, {len(layers) - 1}] (the model has {len(layers)} '
                     f'layers with weights; the base needs at least one); got {head_layers!r}.')
  return sum(len(l.trainable_weights) for l in layers[-head_layers:])


def _check_head_size(model_fn, head_size: int) -> None:
  num_vars = len(client_work_lib.model_types(model_fn)[0].trainable)
  if not isinstance(head_size, int) or not 1 <= head_size < num_vars:
    raise ValueError(f'head_size must be an int in [1, {num_vars - 1}] (trailing trainable variables); '
                     f'got {head_size!r}.')


def personal_weights(weights, client_state, head_size: int):
  """TF: ModelWeights with the server base and the client's head (the server head if it has none yet)."""
  server_head = weights.trainable[-head_size:]
  head = [tf.where(client_state['initialized'] > 0, own, glob) for own, glob in zip(client_state['head'], server_head)]
  return tff.learning.models.ModelWeights(trainable=list(weights.trainable[:-head_size]) + head,
                                          non_trainable=weights.non_trainable)


def build_fedper(model_fn: client_work_lib.ModelFn, client_optimizer: tff.learning.optimizers.Optimizer,
                 head_size: int, server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *,
                 client_weighting: ClientWeighting = ClientWeighting.NUM_EXAMPLES,
                 model_aggregator: Optional[fed_avg.AnyFactory] = None,
                 metrics_aggregator=None) -> stateful_process.StatefulProcess:
  """FedPer (see module docstring); `head_size` = trailing trainable variables kept per client."""
  _check_head_size(model_fn, head_size)

  def client_state_fn():
    model = model_fn()
    head = [tf.zeros(v.shape, v.dtype) for v in model.trainable_variables[-head_size:]]
    return collections.OrderedDict(head=head, initialized=tf.constant(0.0, tf.float32))

  def client_fn(weights, extra, client_state, dataset):
    del extra
    local_train = stateful_process.build_local_sgd_fn(model_fn(), weighting=client_weighting)
    start = personal_weights(weights, client_state, head_size)
    out, unfinalized = local_train(client_optimizer, start, dataset)
    new_head = [h - d for h, d in zip(start.trainable[-head_size:], out['update'][-head_size:])]
    head_update = [g - h for g, h in zip(weights.trainable[-head_size:], new_head)]
    out['update'] = list(out['update'][:-head_size]) + head_update
    out['client_state'] = collections.OrderedDict(head=new_head, initialized=tf.constant(1.0, tf.float32))
    out['upload'] = tf.constant(0.0, tf.float32)
    return out, unfinalized

  return stateful_process.build_stateful_process(
      model_fn, client_fn=client_fn, client_state_fn=client_state_fn, server_optimizer=server_optimizer,
      model_aggregator=model_aggregator, metrics_aggregator=metrics_aggregator)


def build_personalized_eval(model_fn: client_work_lib.ModelFn, head_size: int,
                            client_state_type) -> tff.Computation:
  """(weights@SERVER, client_states@CLIENTS, data@CLIENTS) -> per-client eval sums of (base, own head)."""
  return build_client_state_eval(model_fn, client_state_type, lambda w, s: personal_weights(w, s, head_size))


def build_client_state_eval(model_fn: client_work_lib.ModelFn, client_state_type, personalize) -> tff.Computation:
  """(weights@SERVER, client_states@CLIENTS, data@CLIENTS) -> per-client eval sums of the model
  `personalize(weights, client_state)` (TF logic returning ModelWeights), e.g. FedPer's or Ditto's personal model."""
  weights_type, data_type, _ = client_work_lib.model_types(model_fn)

  @tff.tensorflow.computation(weights_type, client_state_type, data_type)
  def client_eval(weights, client_state, dataset):
    return evaluation.build_client_eval_fn(model_fn())(personalize(weights, client_state), dataset)

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(client_state_type, tff.CLIENTS),
                             tff.FederatedType(data_type, tff.CLIENTS))
  def personalized_eval(weights, client_states, datasets):
    return tff.federated_map(client_eval, (tff.federated_broadcast(weights), client_states, datasets))

  return personalized_eval


def build_finetune_eval(model_fn: client_work_lib.ModelFn,
                        optimizer: tff.learning.optimizers.Optimizer) -> tff.Computation:
  """(weights@SERVER, train_data@CLIENTS, eval_data@CLIENTS) -> per-client eval sums after local fine-tuning."""
  weights_type, data_type, _ = client_work_lib.model_types(model_fn)

  @tff.tensorflow.computation(weights_type, data_type, data_type)
  def client_finetune_eval(weights, train_data, eval_data):
    model = model_fn()
    out, _ = stateful_process.build_local_sgd_fn(model, weighting=ClientWeighting.UNIFORM)(
        optimizer, weights, train_data)
    tuned = tff.learning.models.ModelWeights(
        trainable=[w - d for w, d in zip(weights.trainable, out['update'])], non_trainable=weights.non_trainable)
    return evaluation.build_client_eval_fn(model)(tuned, eval_data)

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER), tff.FederatedType(data_type, tff.CLIENTS),
                             tff.FederatedType(data_type, tff.CLIENTS))
  def finetune_eval(weights, train_data, eval_data):
    return tff.federated_map(client_finetune_eval, (tff.federated_broadcast(weights), train_data, eval_data))

  return finetune_eval
