"""Experiment components: each module defines its flag group and configures an `Experiment`.

A component module has `define_flags()` (called once at import of the binary) and `configure(exp)` (called in the
order below, after the task is built and before the process is built). It may set `exp.model_aggregator`, register
an algorithm builder (`tff_fl.algorithms.builders.register`), set `exp.sampler` / `exp.client_inputs_fn`, replace
the process builder (`exp.replace_process_builder`) or wrap the built process (`exp.wrap_learning_process`), or
append `RoundHook`s. Adding a component = one module here + one line in COMPONENTS.
"""

import importlib

# Order matters: each entry says what it must follow.
COMPONENTS = (
    'real_data',  # registers the real-data tasks at import; adds the central evaluation hook
    'regimes',  # before hierarchical: it groups the regime's client inputs by cluster
    'stragglers',  # after regimes (reads its straggler flags), before hierarchical
    'aggregation',  # after regimes/stragglers (wraps their client inputs for attacks); before privacy and drift
    'privacy',  # after any sampler-setting component (refuses them); owns sampler + accounting; sets the DP aggregator
    'stateful',  # after regimes/stragglers (wraps their inputs); registers scaffold, feddyn, fednova, fedper, ditto
    'hierarchical',
    'pruning',  # sets exp.process_builder for fedavg/fedprox (a second replacement, e.g. --engine=fast, is refused)
    'drift',  # wraps the aggregator; adds a process wrapper (before preprocessing's: it needs dataset inputs)
    'preprocessing',  # adds the process wrapper composing the dataset computation in front of the process
    'engine',  # --engine=fast refuses experiments whose components changed inputs, client work or process
    'workers',  # after engine: installs the multi-worker context; its wrapper checks the final process splits
)


def modules():
  return [importlib.import_module(f'experiments.components.{name}') for name in COMPONENTS]
