"""Simulated Byzantine clients: update attacks (sign flip, scaling, Gaussian noise) and label flipping.

`build_attacked_client_work(inner, attack, ...)` wraps any `tff.learning.templates.ClientWorkProcess`. The
wrapped process takes, per client, the structure of sequences built by `attacked_client_data`:

    OrderedDict(data=<inner client data>, malicious=<sequence of one int32: 0 honest, 1 malicious>,
                seed=<sequence of one int32 noise seed>)

(`compose_learning_process` requires client data to be a structure of sequences, so the flag and the seed
travel as one-element datasets.) Honest clients run `inner` unchanged. For malicious clients:

  sign_flip:      update -> -scale * update  (scale=1 is the plain sign flip; >1 also amplifies)
  scaled:         update -> scale * update   (boosting / model replacement)
  gaussian_noise: update -> update + N(0, noise_std^2) i.i.d. per coordinate (stateless, from `seed`)
  label_flip:     labels y -> num_classes - 1 - y in the client's data before `inner` trains on it

`update_weight` and the inner measurements are not changed. `choose_byzantine` picks the malicious subset of a
round's sampled clients reproducibly.
"""

import collections
import math
from typing import Hashable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

ATTACKS = ('none', 'sign_flip', 'scaled', 'gaussian_noise', 'label_flip')


def _label_flipper(element_spec, num_classes: int, label_key: Optional[str]):
  """Element function for `dataset.map`: label y -> num_classes - 1 - y, for (x, y) or dict elements."""
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
    raise ValueError(f'num_classes must be an int >= 2; got {num_classes!r}')
  if isinstance(element_spec, tuple) and len(element_spec) == 2:
    return lambda x, y: (x, tf.cast(num_classes - 1, y.dtype) - y)
  if isinstance(element_spec, dict):
    key = label_key or ('y' if 'y' in element_spec else 'label')
    if key not in element_spec:
      raise ValueError(f'label_key {key!r} is not in the dataset element keys {sorted(element_spec)}')

    def flip(element):
      out = type(element)(element)
      out[key] = tf.cast(num_classes - 1, element[key].dtype) - element[key]
      return out

    return flip
  raise ValueError(f'label flipping needs (x, y) tuples or dict elements; got element_spec {element_spec}')


def flip_labels(dataset: tf.data.Dataset, num_classes: int, label_key: Optional[str] = None) -> tf.data.Dataset:
  """Maps label y to num_classes - 1 - y in every element.

  Elements are `(x, y)` tuples or dicts; for dicts `label_key` names the label (default: 'y', else 'label').
  """
  return dataset.map(_label_flipper(dataset.element_spec, num_classes, label_key))


def attacked_client_data(dataset: tf.data.Dataset, malicious: bool, seed: int = 0) -> collections.OrderedDict:
  """One client's input for a process built with `build_attacked_client_work`."""
  return collections.OrderedDict(
      data=dataset,
      malicious=tf.data.Dataset.from_tensors(np.int32(bool(malicious))),
      seed=tf.data.Dataset.from_tensors(np.int32(seed)))


def choose_byzantine(client_ids: Sequence[Hashable], fraction: float, seed: int, round_num: int) -> set:
  """The floor(fraction * len(client_ids)) malicious clients of a round, reproducible from (seed, round_num)."""
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
    raise ValueError(f'byzantine_fraction must be a float in [0, 1]; got {fraction!r}')
  ids = sorted(client_ids, key=str)
  count = math.floor(fraction * len(ids) + 1e-9)
  rng = np.random.default_rng([int(seed), int(round_num)])
  return {ids[i] for i in rng.choice(len(ids), size=count, replace=False)}


def _attack_update(update, attack: str, scale: float, noise_std: float, seed):
  """The malicious version of `update` (a structure of float tensors) under an update attack."""
  if attack == 'sign_flip':
    return tf.nest.map_structure(lambda u: -tf.cast(scale, u.dtype) * u, update)
  if attack == 'scaled':
    return tf.nest.map_structure(lambda u: tf.cast(scale, u.dtype) * u, update)
  if attack == 'gaussian_noise':
    leaves = tf.nest.flatten(update)
    noisy = [u + tf.cast(noise_std, u.dtype) * tf.random.stateless_normal(
        tf.shape(u), seed=tf.stack([seed, i]), dtype=u.dtype) for i, u in enumerate(leaves)]
    return tf.nest.pack_sequence_as(update, noisy)
  return update  # 'label_flip' and 'none' leave the update alone.


def _single_int(dataset) -> tf.Tensor:
  return dataset.reduce(tf.constant(0, tf.int32), lambda acc, x: acc + tf.cast(x, tf.int32))


def build_attacked_client_work(inner: tff.learning.templates.ClientWorkProcess, attack: str,
                               scale: float = 1.0, noise_std: float = 1.0, num_classes: Optional[int] = None,
                               label_key: Optional[str] = None) -> tff.learning.templates.ClientWorkProcess:
  """Wraps `inner` so that clients flagged malicious in their data (see module docstring) attack."""
  if attack not in ATTACKS:
    raise ValueError(f'--attack must be one of {", ".join(ATTACKS)}; got {attack!r}')
  if attack == 'label_flip' and num_classes is None:
    raise ValueError('--attack=label_flip needs num_classes (the task\'s number of label classes)')
  if attack == 'gaussian_noise' and not noise_std >= 0:
    raise ValueError(f'attack noise_std must be >= 0; got {noise_std!r}')
  state_type, weights_type, data_type = inner.next.type_signature.parameter
  result_type = inner.next.type_signature.result.result.member
  flag_type = tff.SequenceType(np.int32)
  wrapped_data_type = tff.FederatedType(
      collections.OrderedDict(data=data_type.member, malicious=flag_type, seed=flag_type), tff.CLIENTS)

  @tff.tensorflow.computation(data_type.member, flag_type)
  def prepare_data(dataset, malicious):
    if attack != 'label_flip':
      return dataset
    flip = _label_flipper(dataset.element_spec, num_classes, label_key)
    is_bad = _single_int(malicious) > 0

    def maybe_flip(*element):
      return tf.cond(is_bad, lambda: flip(*element), lambda: element if len(element) > 1 else element[0])

    return dataset.map(maybe_flip)

  @tff.tensorflow.computation(result_type, flag_type, flag_type)
  def attack_result(result, malicious, seed):
    is_bad = _single_int(malicious) > 0
    attacked = _attack_update(result.update, attack, scale, noise_std, _single_int(seed))
    update = tf.cond(is_bad, lambda: attacked, lambda: result.update)
    return tff.learning.templates.ClientResult(update=update, update_weight=result.update_weight)

  @tff.federated_computation(state_type, weights_type, wrapped_data_type)
  def next_fn(state, weights, client_data):
    data = tff.federated_map(prepare_data, (client_data.data, client_data.malicious))
    output = inner.next(state, weights, data)
    result = tff.federated_map(attack_result, (output.result, client_data.malicious, client_data.seed))
    return tff.templates.MeasuredProcessOutput(state=output.state, result=result, measurements=output.measurements)

  return tff.learning.templates.ClientWorkProcess(
      inner.initialize, next_fn, get_hparams_fn=inner.get_hparams, set_hparams_fn=inner.set_hparams)
