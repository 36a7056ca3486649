"""Client preprocessing and augmentation as an `Extension` (the primitives are in `tff_fl.data.preprocess`).

`ClientPreprocessing(spec, train_arrays, seed=, epochs=, batch_size=)` composes with every algorithm:

  client_order     shuffle(n): per epoch a buffered shuffle of the client's examples (seeded per client and
                   round); take(m): only the first m batches (m * B examples) of the round's order
  fields           normalize(client): the client's (mean, std) as packed per-client fields (numpy, from its raw
                   training arrays, computed once per client)
  transform_batch  each example augmented (seeds: `tff_fl.data.preprocess` docstring; from the client's round seed
                   `info['seed']` and the example's position `offset + i` in its round stream), then normalised

`eval_arrays(test_arrays)` gives the evaluation arrays with each client's own normalisation (never augmented).
"""

import collections
from typing import Mapping

import numpy as np
import tensorflow as tf

from tff_fl import tasks as tasks_lib
from tff_fl.algorithms import extension
from tff_fl.data import preprocess

_SHUFFLE_STREAM = 'shuffle_buffer'


class ClientPreprocessing(extension.Extension):
  """Runs a `preprocess.PreprocessSpec` on the packed clients (module docstring)."""

  name = 'preprocess'

  def __init__(self, spec: preprocess.PreprocessSpec, train_arrays: Mapping[str, tuple], *, seed: int, epochs: int,
               batch_size: int):
    if epochs < 1 or batch_size < 1:
      raise ValueError(f'epochs and batch_size must be >= 1; got {epochs}, {batch_size}.')
    x0 = next(iter(train_arrays.values()))[0]
    spec.validate(x0.shape[1:], x0.dtype)
    self.spec, self.train_arrays = spec, train_arrays
    self.seed, self.epochs, self.batch_size = seed, epochs, batch_size
    self._stats: dict[str, tuple[float, float]] = {}
    self._per_client = spec.normalize == ('client',)

  def _statistics(self, client_id: str) -> tuple[float, float]:
    if client_id not in self._stats:
      self._stats[client_id] = preprocess.normalization(self.spec, self.train_arrays[client_id][0])
    return self._stats[client_id]

  def has(self, method):
    if method == 'client_order':
      return self.spec.shuffle_buffer is not None or self.spec.max_batches is not None
    if method == 'transform_batch':
      return bool(self.spec.augment) or self.spec.normalize is not None
    return super().has(method)

  # Example order -------------------------------------------------------------------------------------------------
  def client_order(self, client_id, round_num, order):
    if self.spec.shuffle_buffer is not None:
      n = len(self.train_arrays[client_id][1])
      rng = np.random.default_rng(tasks_lib.derived_seed(self.seed, round_num, f'{_SHUFFLE_STREAM}/{client_id}'))
      order = np.concatenate([preprocess.buffered_shuffle(n, self.spec.shuffle_buffer, rng)
                              for _ in range(self.epochs)] or [np.zeros([0], np.int64)])
    if self.spec.max_batches is not None:
      order = order[:self.spec.max_batches * self.batch_size]
    return order

  # Per-client normalisation statistics ---------------------------------------------------------------------------
  def field_specs(self):
    if not self._per_client:
      return {}
    return collections.OrderedDict(mean=tf.TensorSpec([], tf.float32), std=tf.TensorSpec([], tf.float32))

  def fields(self, round_num, client_ids, sampled):
    del round_num, sampled
    if not self._per_client:
      return {}
    stats = np.array([self._statistics(c) for c in client_ids], np.float32).reshape(len(client_ids), 2)
    return collections.OrderedDict(mean=stats[:, 0], std=stats[:, 1])

  # Each local batch ----------------------------------------------------------------------------------------------
  def transform_batch(self, batch, info, bcast, offset):
    del bcast
    x = preprocess.augment_batch(batch['x'], self.spec.augment, info['seed'], offset)
    if self._per_client:
      x = (x - info['mean']) / info['std']
    elif self.spec.normalize is not None:
      mean, std = (float(v) for v in self.spec.normalize)
      x = (x - mean) / std
    out = collections.OrderedDict(batch)
    out['x'] = x
    return out

  def eval_arrays(self, test_arrays: Mapping[str, tuple]):
    """client id -> (x, y) normalised as the client's training data; None without normalisation."""
    return preprocess.normalized_eval_arrays(self.spec, self.train_arrays, test_arrays)
