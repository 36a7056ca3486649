"""Fixtures for the aggregator tests: a context in which TFF's secure-sum intrinsics can execute."""

import types

import pytest
from tensorflow_federated.python.core.backends.native import compiler as native_compiler
from tensorflow_federated.python.core.backends.test import compiler as test_compiler

from tff_fl.simulation import contexts


def _compile_with_secure_bodies(comp):
  # The C++ runtime has no SecAgg protocol: lower secure sums to plain sums with range checks, as
  # tff.backends.test contexts do, then compile as the managed context does.
  return native_compiler.desugar_and_transform_to_native(test_compiler.replace_secure_intrinsics_with_bodies(comp))


@pytest.fixture(scope='module')
def secure_context():
  """Runs the test in a managed local C++ context whose compiler also lowers secure intrinsics.

  Stopgap until tff_fl/simulation/contexts.py applies `replace_secure_intrinsics_with_bodies` itself.
  """
  patch = pytest.MonkeyPatch()
  patch.setattr(contexts, 'compiler', types.SimpleNamespace(
      desugar_and_transform_to_native=_compile_with_secure_bodies))
  try:
    with contexts.local_cpp_context() as context:
      yield context
  finally:
    patch.undo()
