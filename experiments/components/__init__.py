"""Experiment components: each module defines its flag group and declares its parts on an `Experiment`.

A component module has `define_flags()` (called once at import of the binary), optionally `flag_defaults()` (called
after parsing, before any config is read: sets flags whose default depends on other flags, only when the user did
not set them), and `configure(exp)` (called after the task is built and before the process is built). It declares
parts (`experiments/experiment.py`): extensions for the round's stages, the model aggregator, the sampler, the
participation (who reports), hooks, the client-state store, evaluation arrays or process checks. No component
replaces the process or another component's objects. Algorithms, tasks, models and aggregator stages are in the
library's registries (`tff_fl.registry`). Adding a component = a module with those functions and
`COMPONENTS.register(name, module)` (built in: the names below; a `--plugin` module may register more, which run
after these).
"""

import importlib
import types
from typing import Union

from tff_fl import registry

COMPONENTS = registry.Registry('component')  # name -> module or its dotted path (imported by `modules()`)

# Order still matters where a component reads a part another declared: each entry says what it must follow.
for _name in (
    'engine',  # --engine / --engine_slots: sets exp.engine, which later components may refuse combinations with
    'algorithms',  # fednova's binary-level checks (its step count and the aggregator / dp / compression flags)
    'real_data',  # adds the central evaluation hook
    'regimes',  # sampler (availability, cross-silo) and, with --straggler_model=per_client, the participation
    'stragglers',  # the participation with --straggler_model=fedprox (reads the regimes' straggler flags)
    'aggregation',  # --aggregator chain and attacks (an extension); before privacy, which refuses a custom chain
    'privacy',  # after any sampler-setting component (refuses them); DP aggregator, sampler + accounting, DP-SGD
    'stateful',  # client-state store and clients.csv; top-k with error feedback (a registry wrapper)
    'hierarchical',
    'pruning',  # an extension (any algorithm): masks in training, aggregate and server step; export hook
    'drift',  # an extension (any algorithm): per-client figures and the aggregate pass
    'preprocessing',  # an extension (any algorithm): example order, augmentation, normalisation; eval_arrays
    'workers',  # installs the multi-worker context; checks the built process splits over the workers
):
  COMPONENTS.register(_name, f'experiments.components.{_name}')


def module(entry: Union[str, types.ModuleType]) -> types.ModuleType:
  return importlib.import_module(entry) if isinstance(entry, str) else entry


def modules() -> list[types.ModuleType]:
  """Every registered component module, in registration order."""
  return [module(entry) for _, entry in COMPONENTS.items()]
