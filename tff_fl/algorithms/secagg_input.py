"""The extension that gives secure aggregation (`tff_fl.aggregators.secagg`) each client's place in the cohort.

SecAgg masks are set up among the round's *sampled* clients before anyone drops, so a reporting client needs its
position among them, their number n, the round, and (for the unmasking step) the survivors the server announces.
`SecAggInput` packs them per reporting client (`Extension.fields`, from the engine's Cohort: `sampled` and the
reporting `client_ids`) and sets `aggregator_input`, so the engine hands them to the aggregator with each weight:

  index: int32 position in `sampled`;  n: int32 len(sampled);  round: int32;  alive: int32[max_clients], 1 at the
  positions of the clients that report (padding after n is 0).
"""

import collections

import numpy as np
import tensorflow as tf

from tff_fl.algorithms import extension

NAME = 'secagg'


class SecAggInput(extension.Extension):
  """Per-client SecAgg inputs for cohorts of at most `max_clients` sampled clients (module docstring)."""

  name = NAME
  aggregator_input = True

  def __init__(self, max_clients: int):
    if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
      raise ValueError(f'max_clients must be an int >= 1; got {max_clients!r}.')
    self.max_clients = max_clients

  def field_specs(self):
    return collections.OrderedDict(
        index=tf.TensorSpec([], tf.int32), n=tf.TensorSpec([], tf.int32), round=tf.TensorSpec([], tf.int32),
        alive=tf.TensorSpec([self.max_clients], tf.int32))

  def fields(self, round_num, client_ids, sampled):
    sampled = list(sampled)
    if len(sampled) > self.max_clients:
      raise ValueError(f'secure aggregation was set up for at most {self.max_clients} sampled clients; the round '
                       f'sampled {len(sampled)}.')
    if len(set(sampled)) != len(sampled):
      raise ValueError('secure aggregation needs distinct sampled clients.')
    position = {c: i for i, c in enumerate(sampled)}
    index = np.array([position[c] for c in client_ids], np.int32)
    alive = np.zeros([self.max_clients], np.int32)
    alive[index] = 1
    k = len(index)
    return collections.OrderedDict(index=index, n=np.full([k], len(sampled), np.int32),
                                   round=np.full([k], round_num, np.int32), alive=np.tile(alive, (k, 1)))
