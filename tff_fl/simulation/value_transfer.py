"""Serializing large arguments for the TFF worker with one copy of their bytes, not five.

TFF 0.87's `value_serialization.serialize_value` builds the `executor_pb2.Value` bottom-up: the tensor's bytes go
into an `Array`, which is copied into a `Value`, into a `Struct.Element`, into the `Struct`, into its `Value` and
into the federated value list (each upb sub-message assignment is a deep copy). For the packed engine's client
states (float32[C, S], 22 MB at C=100, S=55,210) these copies, each on freshly faulted-in pages, cost more than
the round's training. `serialize_value` here builds the same proto top-down, in place: a large numpy array's bytes
are copied once (`tobytes`) and once more into the message; every other leaf (small tensors, computations,
datasets, scalars, strings) is serialized by TFF itself and copied in. The result equals TFF's proto field for
field (tests/simulation/test_value_transfer.py).

`RemoteExecutor` is TFF's remote executor with this serialization in `create_value`.

Each 22 MB buffer (the bytes, the message, the gRPC payload, the worker's parsed copy and tensors, and the same on
the way back) is fresh memory: glibc serves it with mmap and returns it on free, so every round pays the page
faults again. `keep_large_blocks()` (this process) and `worker_env()` (the worker) raise glibc's mmap and trim
thresholds to `LARGE_BLOCK_BYTES`, so such buffers are reused from the heap; larger ones keep glibc's default.
"""

import ctypes
import os

import numpy as np
from tensorflow_federated.proto.v0 import executor_pb2
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.impl.compiler import array
from tensorflow_federated.python.core.impl.executors import remote_executor
from tensorflow_federated.python.core.impl.executors import value_serialization
from tensorflow_federated.python.core.impl.types import array_shape
from tensorflow_federated.python.core.impl.types import computation_types
from tensorflow_federated.python.core.impl.types import dtype_utils
from tensorflow_federated.python.core.impl.types import type_serialization

LARGE_BYTES = 1 << 16  # Arrays at least this large take the in-place path; smaller leaves go through TFF.
LARGE_BLOCK_BYTES = 1 << 28  # glibc mmap and trim thresholds (256 MB): blocks below are reused, not re-faulted.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h).
_kept = []


def keep_large_blocks() -> None:
  """Raises this process's glibc mmap / trim thresholds to `LARGE_BLOCK_BYTES` (once; no-op without glibc or when
  MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ are set by the user)."""
  if _kept or 'MALLOC_MMAP_THRESHOLD_' in os.environ or 'MALLOC_TRIM_THRESHOLD_' in os.environ:
    return
  _kept.append(True)
  try:
    libc = ctypes.CDLL('libc.so.6')
    libc.mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)
    libc.mallopt(_M_TRIM_THRESHOLD, LARGE_BLOCK_BYTES)
  except (OSError, AttributeError):
    pass


def worker_env(env: dict) -> dict:
  """`env` with the same glibc thresholds for a worker process (values already set are kept)."""
  env.setdefault('MALLOC_MMAP_THRESHOLD_', str(LARGE_BLOCK_BYTES))
  env.setdefault('MALLOC_TRIM_THRESHOLD_', str(LARGE_BLOCK_BYTES))
  return env


def _is_large_array(value, type_spec) -> bool:
  return (isinstance(type_spec, computation_types.TensorType) and isinstance(value, np.ndarray)
          and value.nbytes >= LARGE_BYTES and value.dtype.type is type_spec.dtype.type
          and type_spec.dtype.type is not np.str_ and not array_shape.is_shape_scalar(type_spec.shape)
          and array.is_compatible_shape(value, type_spec.shape))


def _has_large_array(value, type_spec) -> bool:
  if isinstance(type_spec, computation_types.TensorType):
    return _is_large_array(value, type_spec)
  if isinstance(type_spec, computation_types.FederatedType):
    members = [value] if type_spec.all_equal else value
    return isinstance(members, list) and any(_has_large_array(v, type_spec.member) for v in members)
  if isinstance(type_spec, computation_types.StructType):
    try:
      elements = structure.from_container(value)
    except TypeError:
      return False
    return len(elements) == len(type_spec) and any(
        _has_large_array(v, t) for v, t in zip(elements, type_spec))
  return False


def _fill(target: executor_pb2.Value, value, type_spec) -> None:
  """Writes the serialization of `value` (of `type_spec`) into `target`, as TFF's `serialize_value` would."""
  if not _has_large_array(value, type_spec):
    target.CopyFrom(value_serialization.serialize_value(value, type_spec)[0])
  elif isinstance(type_spec, computation_types.TensorType):
    target.array.dtype = dtype_utils.to_proto(type_spec.dtype.type)
    target.array.shape.CopyFrom(array_shape.to_proto(value.shape))
    target.array.content = value.tobytes()
  elif isinstance(type_spec, computation_types.FederatedType):
    for v in ([value] if type_spec.all_equal else value):
      _fill(target.federated.value.add(), v, type_spec.member)
    target.federated.type.CopyFrom(type_serialization.serialize_type(type_spec).federated)
  else:  # StructType
    target.struct.SetInParent()
    for (name, e_type), e_value in zip(structure.iter_elements(type_spec), structure.from_container(value)):
      element = target.struct.element.add()
      if name:
        element.name = name
      _fill(element.value, e_value, e_type)


def serialize_value(value, type_spec) -> executor_pb2.Value:
  """`value_serialization.serialize_value(value, type_spec)[0]` with large arrays copied once (module docstring)."""
  out = executor_pb2.Value()
  _fill(out, value, type_spec)
  return out


class RemoteExecutor(remote_executor.RemoteExecutor):
  """TFF's `RemoteExecutor`; `create_value` serializes with `serialize_value` (TFF's path when no type is given)."""

  async def create_value(self, value, type_spec=None):
    if type_spec is None or self._stream_structs or not _has_large_array(value, type_spec):
      return await super().create_value(value, type_spec)
    self._check_has_executor_id()
    request = executor_pb2.CreateValueRequest(executor=self._executor_id)
    _fill(request.value, value, type_spec)
    response = self._stub.create_value(request)
    return remote_executor.RemoteValue(response.value_ref, type_spec, self)
