"""tff_fl: a federated learning research pipeline on TensorFlow Federated 0.87.

Importing the package installs a managed local C++ execution context as TFF's default (see
`tff_fl.simulation.contexts`): its worker process writes to no inherited pipe and never outlives Python.
"""

from tff_fl.simulation import contexts as _contexts

_contexts.set_local_cpp_context()
