"""Experiment components: each module defines its flag group and declares its parts on an `Experiment`.

A component module has `define_flags()` (called once at import of the binary) and `configure(exp)` (called after
the task is built and before the process is built). It declares parts (`experiments/experiment.py`): an algorithm
in the registry (`tff_fl.algorithms.builders.register`), extensions for the round's stages, the model aggregator,
the sampler, the participation (who reports), hooks, the client-state store, evaluation arrays or process checks.
No component replaces the process or another component's objects. Adding a component = one module here + one line
in COMPONENTS.
"""

import importlib

# Order still matters where a component reads a part another declared: each entry says what it must follow.
COMPONENTS = (
    'engine',  # --engine / --engine_slots: sets exp.engine, which later components may refuse combinations with
    'algorithms',  # registers fedsgd and fednova
    'real_data',  # registers the real-data tasks at import; adds the central evaluation hook
    'regimes',  # sampler (availability, cross-silo) and, with --straggler_model=per_client, the participation
    'stragglers',  # the participation with --straggler_model=fedprox (reads the regimes' straggler flags)
    'aggregation',  # --aggregator chain and attacks (an extension); before privacy, which refuses a custom chain
    'privacy',  # after any sampler-setting component (refuses them); DP aggregator, sampler + accounting, DP-SGD
    'stateful',  # registers the stateful algorithms; client-state store and clients.csv
    'hierarchical',
    'pruning',  # an extension (any algorithm): masks in training, aggregate and server step; export hook
    'drift',  # an extension (any algorithm): per-client figures and the aggregate pass
    'preprocessing',  # an extension (any algorithm): example order, augmentation, normalisation; eval_arrays
    'workers',  # installs the multi-worker context; checks the built process splits over the workers
)


def modules():
  return [importlib.import_module(f'experiments.components.{name}') for name in COMPONENTS]
