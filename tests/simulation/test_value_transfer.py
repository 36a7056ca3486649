"""value_transfer.serialize_value builds TFF's own proto (field for field) with large arrays copied once."""

import collections

import numpy as np
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.executors import value_serialization

from tff_fl.simulation import value_transfer


def _slot_type(state_dim):
  return tff.StructWithPythonType([
      ('x', tff.TensorType(np.float32, [None, None, 4])), ('n', tff.TensorType(np.int32, [None])),
      ('state', tff.TensorType(np.float32, [None, state_dim])),
      ('info', tff.StructWithPythonType([], collections.OrderedDict))], collections.OrderedDict)


def _slot(rng, clients, state_dim):
  return collections.OrderedDict(x=rng.random((clients, 3, 4), dtype=np.float32), n=np.full([clients], 3, np.int32),
                                 state=rng.random((clients, state_dim), dtype=np.float32),
                                 info=collections.OrderedDict())


def test_federated_slots_with_large_states_equal_tff_proto():
  rng = np.random.default_rng(0)
  type_spec = tff.FederatedType(_slot_type(5000), tff.CLIENTS)
  value = [_slot(rng, 7, 5000), _slot(rng, 3, 5000)]
  assert value_transfer._has_large_array(value, type_spec)  # pylint: disable=protected-access
  expected, _ = value_serialization.serialize_value(value, type_spec)
  assert value_transfer.serialize_value(value, type_spec) == expected


def test_all_equal_struct_and_small_values_equal_tff_proto():
  rng = np.random.default_rng(1)
  big = tff.TensorType(np.float32, [300, 100])
  struct_type = tff.StructType([('a', big), ('b', tff.TensorType(np.float64)), (None, tff.TensorType(np.int32, [2]))])
  value = tff.structure.Struct([('a', rng.random((300, 100), dtype=np.float32)), ('b', np.float64(2.5)),
                                (None, np.array([1, 2], np.int32))])
  for type_spec, v in [(tff.FederatedType(struct_type, tff.SERVER), value), (struct_type, value),
                       (tff.FederatedType(tff.TensorType(np.float32, [3]), tff.CLIENTS), [np.ones(3, np.float32)])]:
    expected, _ = value_serialization.serialize_value(v, type_spec)
    assert value_transfer.serialize_value(v, type_spec) == expected


def test_round_trip_through_the_worker_keeps_values():
  state_type = tff.TensorType(np.float32, [None, 20000])

  @tff.tensorflow.computation(state_type)
  def plus_one(x):
    return x + 1.0

  @tff.federated_computation(tff.FederatedType(state_type, tff.CLIENTS))
  def round_trip(x):
    return tff.federated_map(plus_one, x)

  states = [np.random.default_rng(2).random((4, 20000), dtype=np.float32), np.zeros([2, 20000], np.float32)]
  out = round_trip(states)
  np.testing.assert_array_equal(out[0], states[0] + 1.0)
  np.testing.assert_array_equal(out[1], np.ones([2, 20000], np.float32))
