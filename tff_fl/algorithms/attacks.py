"""Simulated Byzantine clients as an `Extension`: update attacks (sign flip, scaling, Gaussian noise), label flipping.

`ByzantineAttack(attack, fraction, seed, ...)` composes with every algorithm. Each round, `choose_byzantine` picks
fraction * |sampled| malicious clients among the round's SAMPLED cohort, rounded stochastically (floor, plus one with
probability of the fractional part; seeded) so the expected count is exact also for cohorts too small for one (3
available clients at fraction 0.2, or a hierarchical round's per-cluster cohorts); of those, only the clients that
report attack (a dropped client sends nothing, malicious or not). The choice travels as the packed per-client field
`malicious` (int32, 0 honest / 1 malicious). For malicious clients:

  sign_flip:      update -> -scale * update  (scale=1 is the plain sign flip; >1 also amplifies)
  scaled:         update -> scale * update   (boosting / model replacement)
  gaussian_noise: update -> update + N(0, noise_std^2) i.i.d. per coordinate, stateless from the client's round
                  seed (`info['seed']`: same seed, same noise)
  label_flip:     labels y -> num_classes - 1 - y in every local batch before the algorithm trains on it

Update attacks transform the update sent to the aggregator (`transform_update`); `update_weight`, uploads (e.g.
SCAFFOLD's control-variate deltas) and client states are not changed. `last_malicious` holds the flags of the last
round's packed cohorts (reporting clients, in order; a hierarchical round's clusters one after another) for the
training loop's `AttackHook`.
"""

import collections
import math
import zlib
from typing import Hashable, Optional, Sequence

import numpy as np
import tensorflow as tf

from tff_fl.algorithms import extension

ATTACKS = ('none', 'sign_flip', 'scaled', 'gaussian_noise', 'label_flip')
UPDATE_ATTACKS = ('sign_flip', 'scaled', 'gaussian_noise')


def choose_byzantine(client_ids: Sequence[Hashable], fraction: float, seed: int, round_num: int) -> set:
  """The malicious clients of a round: fraction * len(client_ids) of them, rounded stochastically (E[count] is
  exact), reproducible from (seed, round_num, client_ids)."""
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
    raise ValueError(f'byzantine_fraction must be a float in [0, 1]; got {fraction!r}')
  ids = sorted(client_ids, key=str)
  expected = fraction * len(ids)
  count = math.floor(expected + 1e-9)
  if expected - count > 1e-9:
    cohort_hash = zlib.crc32('\x00'.join(map(str, ids)).encode())
    count += int(np.random.default_rng([int(seed), int(round_num), cohort_hash]).random() < expected - count)
  rng = np.random.default_rng([int(seed), int(round_num)])
  return {ids[i] for i in rng.choice(len(ids), size=count, replace=False)}


def flip_labels(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
  """y -> num_classes - 1 - y, elementwise (any label shape)."""
  return tf.cast(num_classes - 1, labels.dtype) - labels


def attack_update(update, attack: str, scale: float, noise_std: float, seed):
  """The malicious version of `update` (a structure of float tensors); `seed` an int32 scalar (gaussian_noise)."""
  if attack == 'sign_flip':
    return tf.nest.map_structure(lambda u: -tf.cast(scale, u.dtype) * u, update)
  if attack == 'scaled':
    return tf.nest.map_structure(lambda u: tf.cast(scale, u.dtype) * u, update)
  if attack == 'gaussian_noise':
    leaves = tf.nest.flatten(update)
    seed = tf.cast(seed, tf.int32)
    noisy = [u + tf.cast(noise_std, u.dtype) * tf.random.stateless_normal(
        tf.shape(u), seed=tf.stack([seed, i]), dtype=u.dtype) for i, u in enumerate(leaves)]
    return tf.nest.pack_sequence_as(update, noisy)
  return update  # 'label_flip' and 'none' leave the update alone.


class ByzantineAttack(extension.Extension):
  """Malicious clients attack their update or their labels (module docstring)."""

  name = 'attack'

  def __init__(self, attack: str, fraction: float, seed: int, *, scale: float = 1.0, noise_std: float = 1.0,
               num_classes: Optional[int] = None):
    if attack not in ATTACKS or attack == 'none':
      raise ValueError(f'attack must be one of {", ".join(ATTACKS[1:])}; got {attack!r}')
    choose_byzantine([], fraction, seed, 0)  # Validates the fraction.
    if attack == 'label_flip' and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                   or num_classes < 2):
      raise ValueError(f'attack=label_flip needs num_classes, an int >= 2; got {num_classes!r}')
    if attack == 'gaussian_noise' and not noise_std >= 0:
      raise ValueError(f'noise_std must be >= 0; got {noise_std!r}')
    self.attack, self.fraction, self.seed = attack, fraction, seed
    self.scale, self.noise_std, self.num_classes = scale, noise_std, num_classes
    self.last_round: Optional[int] = None
    self.last_malicious: list[bool] = []
    self._round_sampled: set = set()

  def field_specs(self):
    return collections.OrderedDict(malicious=tf.TensorSpec([], tf.int32))

  def fields(self, round_num, client_ids, sampled):
    bad = choose_byzantine(sampled, self.fraction, self.seed, round_num)
    flags = [cid in bad for cid in client_ids]
    # A hierarchical round packs each cluster's cohort (disjoint sampled sets) in turn: the round's flags are all of
    # them, in that order. The same round packed again (a re-run) replaces them.
    more = round_num == self.last_round and not self._round_sampled & set(sampled)
    self.last_malicious = self.last_malicious + flags if more else flags
    self._round_sampled = self._round_sampled | set(sampled) if more else set(sampled)
    self.last_round = round_num
    return collections.OrderedDict(malicious=np.array(self.last_malicious, np.int32))

  def has(self, method):
    if method == 'transform_batch':
      return self.attack == 'label_flip'
    if method == 'transform_update':
      return self.attack in UPDATE_ATTACKS
    return super().has(method)

  def transform_batch(self, batch, info, bcast, offset):
    del bcast, offset
    if self.attack != 'label_flip':
      return batch
    out = collections.OrderedDict(batch)
    out['y'] = tf.where(info['malicious'] > 0, flip_labels(batch['y'], self.num_classes), batch['y'])
    return out

  def transform_update(self, update, info, bcast):
    del bcast
    if self.attack not in UPDATE_ATTACKS:
      return update
    attacked = attack_update(update, self.attack, self.scale, self.noise_std, info['seed'])
    bad = info['malicious'] > 0
    return tf.nest.map_structure(lambda a, u: tf.where(bad, a, u), attacked, update)
