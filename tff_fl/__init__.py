"""tff_fl: a federated learning research pipeline on TensorFlow Federated 0.87.

Importing the package fills the registries (`tff_fl.registry`): tasks (`tasks.TASKS`, real-data and regional tasks
included), models (`models.keras_models.MODELS`), algorithms (`algorithms.builders.ALGORITHMS`) and aggregator stages
(`aggregators.spec.STAGES`). It has no other side effect: TFF's execution context is left alone. The simulation
layer and the binaries install the managed local C++ context (`tff_fl.simulation.contexts.set_local_cpp_context`);
a Python user calling TFF computations directly installs it (or any context) first.
"""

from tff_fl import tasks as _tasks  # pylint: disable=unused-import  (digits, synthetic; models)
from tff_fl import tasks_real as _tasks_real  # pylint: disable=unused-import  (mnist, ..., shakespeare; char_lstm)
from tff_fl import tasks_regional as _tasks_regional  # pylint: disable=unused-import  (regional_digits)
from tff_fl import tasks_population as _tasks_population  # pylint: disable=unused-import  (*_population)
from tff_fl.aggregators import spec as _spec  # pylint: disable=unused-import  (aggregator stages)
from tff_fl.algorithms import builders as _builders  # pylint: disable=unused-import  (algorithms)
