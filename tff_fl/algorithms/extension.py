"""Extensions: components that contribute to named stages of any algorithm's round (the engine calls them).

An `Extension` composes with every `Algorithm`: it never sees the algorithm, only the stage it transforms.
Stages, in the order the engine applies them (every method is optional; TF methods run inside the round's graph):

  server state    server_init(model) -> its own server state (TF structure; NO_VALUE for none)
  broadcast       broadcast(state) -> value sent to every client with the model (default: the state)
  client data     client_order(client_id, round, order) -> the indices the client trains on this round (numpy;
                  default: `order`, the task's E seeded permutations; truncation, shuffle buffers);
                  field_specs() / fields(round, ids, sampled): per-client packed values (numpy, e.g. a malicious
                  flag) of the reporting clients `ids`, `sampled` being the round's whole sampled cohort;
                  transform_batch(batch, info, bcast, offset): each local batch (augmentation, label flipping)
  local objective local_options(bcast, info) -> LocalOptions (pruning masks, DP-SGD)
  upload          transform_update(update, info, bcast) -> update sent to the aggregator (attacks)
  aggregator input  `aggregator_input = True` (at most one extension): the aggregator receives this extension's
                  packed fields of each client with its weight, weight = OrderedDict(weight=float32,
                  <name>=OrderedDict(<field>: value)) (protocols that need each client's place in the cohort,
                  e.g. secure aggregation's masks)
  measurement     client_measurements(ctx, output, info) -> OrderedDict of float32 scalars per client; they come
                  back per client and `summarize(per_client)` turns them into metrics (Python, numpy arrays [K])
  aggregation     transform_aggregate(aggregate, state) -> aggregate (pruning masks the averaged update)
  aggregate pass  (measurements against the round's aggregate; only extensions that define `client_vector`)
                  client_vector(ctx, output, update, info) -> float32 [vector_size(...)], kept at the clients;
                  after aggregation the engine broadcasts the aggregate a (the aggregator's result, before
                  transform_aggregate) and the uniform cohort mean m of the vectors, and calls, per client,
                  aggregate_measurements(vector, m, a) -> OrderedDict of float32 scalars (names
                  `aggregate_measurement_names()`); they join the per-client values `summarize` sees
  server update   server_post(weights, state) -> (weights, state, measurements OrderedDict) after the optimizer

`info` is an OrderedDict of this extension's packed fields for one client plus `seed` (int32, the client's seed of
the round). Names of fields and metrics are prefixed by the extension's `name`.
"""

import collections
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tff_fl.algorithms import local_training

NO_VALUE = ()


class Extension:
  """Base class: every stage left unchanged."""

  name = 'extension'
  aggregator_input = False  # True: the aggregator gets this extension's fields with each weight (docstring).
  client_axis = True  # Its client stages run on the engine's client axis (tff_fl.algorithms.client_axis).
  client_axis_note = ''  # Why not, when client_axis is False (logged).

  def client_axis_limit(self, functional_model) -> str:
    """'' if its client stages run on the client axis with this model (`functional.FunctionalModel`), else why not."""
    del functional_model
    return ''

  def server_init(self, model) -> Any:
    del model
    return NO_VALUE

  def broadcast(self, state) -> Any:
    return state

  def field_specs(self) -> Mapping[str, tf.TensorSpec]:
    return {}

  def fields(self, round_num: int, client_ids: Sequence[str], sampled: Sequence[str]) -> Mapping[str, np.ndarray]:
    """{field: [len(client_ids), ...]} for the reporting `client_ids` (packed order); `sampled`: the round's
    sampled cohort (a superset: dropouts and dropped stragglers do not report)."""
    del round_num, client_ids, sampled
    return {}

  def client_order(self, client_id: str, round_num: int, order: np.ndarray) -> np.ndarray:
    """Indices into the client's train arrays it trains on this round (`order`: the task's E permutations)."""
    del client_id, round_num
    return order

  def transform_batch(self, batch, info, bcast, offset):
    del info, bcast, offset
    return batch

  def local_options(self, bcast, info) -> local_training.LocalOptions:
    del bcast, info
    return local_training.LocalOptions()

  def transform_update(self, update, info, bcast):
    del info, bcast
    return update

  def measurement_names(self) -> Sequence[str]:
    """Names of the per-client scalars `client_measurements` returns (fixed: they are stacked per client)."""
    return ()

  def client_measurements(self, ctx, output, info) -> collections.OrderedDict:
    del ctx, output, info
    return collections.OrderedDict()

  def summarize(self, per_client: Mapping[str, np.ndarray]) -> collections.OrderedDict:
    del per_client
    return collections.OrderedDict()

  def transform_aggregate(self, aggregate, state):
    del state
    return aggregate

  def vector_size(self, model, update_size: int) -> int:
    """Length of `client_vector` (static), from a fresh model and the flattened size of the algorithm's update."""
    del model, update_size
    return 0

  def client_vector(self, ctx, output, update, info) -> tf.Tensor:
    """float32 [vector_size] of one client (`update`: as sent to the aggregator, after transform_update)."""
    del ctx, output, update, info
    return tf.zeros([0], tf.float32)

  def aggregate_measurement_names(self) -> Sequence[str]:
    return ()

  def aggregate_measurements(self, vector, mean_vector, aggregate) -> collections.OrderedDict:
    """Per-client float32 scalars from the client's vector, the cohort mean of the vectors and the aggregate."""
    del vector, mean_vector, aggregate
    return collections.OrderedDict()

  def server_post(self, weights, state):
    return weights, state, collections.OrderedDict()

  def has(self, method: str) -> bool:
    """True if this extension overrides `method` (the engine skips stages nobody uses)."""
    return getattr(type(self), method) is not getattr(Extension, method)
