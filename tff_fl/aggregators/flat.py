"""Flattening a (structure of) tensors to one float32 vector and back, for aggregators that need a vector.

Invariant: `unflatten_value(flatten_value(v), value_type)` equals `v` (up to the float32 round trip of each
leaf's dtype) and has `value_type`'s container types, shapes and dtypes. Leaf order is `tf.nest.flatten` order
of the Python containers TFF builds for `value_type` (dict keys sorted), never `tff.structure.flatten` order.
"""

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


def _container(value_type):
  return tff.types.structure_from_tensor_type_tree(lambda t: t, value_type)


def leaf_types(value_type) -> list:
  """The `tff.TensorType` leaves of `value_type`, checked to be floats with fully defined shapes."""
  if not tff.types.is_structure_of_floats(value_type):
    raise TypeError(f'value_type must be a structure of floats; got {value_type}')
  leaves = tf.nest.flatten(_container(value_type))
  for t in leaves:
    if not tff.types.is_shape_fully_defined(t.shape):
      raise TypeError(f'value_type needs fully defined shapes; got {t}')
  return leaves


def flat_size(value_type) -> int:
  """Number of scalars `d` in `value_type`."""
  return int(sum(tff.types.num_elements_in_shape(t.shape) for t in leaf_types(value_type)))


def flatten_value(value) -> tf.Tensor:
  """Concatenates every leaf of `value`, cast to float32, into one vector `float32[d]`."""
  return tf.concat([tf.reshape(tf.cast(x, tf.float32), [-1]) for x in tf.nest.flatten(value)], axis=0)


def unflatten_value(vector: tf.Tensor, value_type):
  """Inverse of `flatten_value`: splits `float32[d]` into `value_type`'s leaves, shapes and dtypes."""
  leaves = leaf_types(value_type)
  sizes = [int(tff.types.num_elements_in_shape(t.shape)) for t in leaves]
  parts = tf.split(vector, sizes)
  return pack_leaves([tf.cast(tf.reshape(p, t.shape), t.dtype) for p, t in zip(parts, leaves)], value_type)


def pack_leaves(tensors: list, value_type):
  """Arranges `tensors` (in leaf order) into `value_type`'s Python containers."""
  return tf.nest.pack_sequence_as(_container(value_type), tensors)


def index_bits(d: int) -> int:
  """Bits needed to address one of `d` coordinates."""
  return max(1, int(np.ceil(np.log2(max(d, 2)))))
