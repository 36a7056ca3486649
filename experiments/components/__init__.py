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

# What each declares. No component reads a part another declares while configuring (cross-part checks are
# `exp.build_checks`); extensions transforming the same stage touch disjoint fields (label flipping: labels;
# preprocessing: inputs) and the others measure after every transform. So any order gives the same runs and the
# same refusals (tests/experiments/test_component_order.py); this order only fixes the order of hooks, and so of
# metrics.csv columns.
for _name in (
    'engine',  # --engine / --engine_slots / --client_axis: exp.engine, exp.engine_slots, exp.client_axis
    'algorithms',  # fednova's binary-level checks (its step count and the aggregator / dp / compression flags)
    'real_data',  # the central evaluation hook
    'regimes',  # the sampler (availability, cross-silo); with --straggler_model=per_client, the participation
    'stragglers',  # the participation with --straggler_model=fedprox
    'aggregation',  # the model aggregator (--aggregator chain); attacks (an extension)
    'privacy',  # the sampler + accounting and the DP aggregator; DP-SGD (an extension); the release policy
    'stateful',  # client-state store and clients.csv; top-k EF (an algorithm wrapper + an aggregator wrapper)
    'hierarchical',  # the process factory (edge and global steps); cluster hook
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
