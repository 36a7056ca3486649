"""Extensions: components that contribute to named stages of any algorithm's round (the engine calls them).

An `Extension` composes with every `Algorithm`: it never sees the algorithm, only the stage it transforms.
Stages, in the order the engine applies them (every method is optional; TF methods run inside the round's graph):

  server state    server_init(model) -> its own server state (TF structure; NO_VALUE for none)
  broadcast       broadcast(state) -> value sent to every client with the model (default: the state)
  client data     field_specs() / fields(round, ids): per-client packed values (numpy, e.g. a malicious flag);
                  transform_batch(batch, info, bcast, offset): each local batch (augmentation, label flipping)
  local objective local_options(bcast, info) -> LocalOptions (pruning masks, DP-SGD)
  upload          transform_update(update, info, bcast) -> update sent to the aggregator (attacks)
  measurement     client_measurements(ctx, output, info) -> OrderedDict of float32 scalars per client; they come
                  back per client and `summarize(per_client)` turns them into metrics (Python, numpy arrays [K])
  aggregation     transform_aggregate(aggregate, state) -> aggregate (pruning masks the averaged update)
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

  def server_init(self, model) -> Any:
    del model
    return NO_VALUE

  def broadcast(self, state) -> Any:
    return state

  def field_specs(self) -> Mapping[str, tf.TensorSpec]:
    return {}

  def fields(self, round_num: int, client_ids: Sequence[str]) -> Mapping[str, np.ndarray]:
    del round_num, client_ids
    return {}

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

  def server_post(self, weights, state):
    return weights, state, collections.OrderedDict()

  def has(self, method: str) -> bool:
    """True if this extension overrides `method` (the engine skips stages nobody uses)."""
    return getattr(type(self), method) is not getattr(Extension, method)
