"""Component: magnitude pruning of the global model over rounds, driven by tfmot schedules.

  --pruning_schedule=none|constant|polynomial  --initial_sparsity  --final_sparsity  --pruning_begin_round
  --pruning_end_round (-1: constant prunes until the end; polynomial ends at --total_rounds)  --pruning_frequency

With a schedule, the experiment gains the `tff_fl.algorithms.pruning.Pruning` extension, so every algorithm on the
engine (fedavg, fedprox, fedsgd, fednova, scaffold, ...) trains under the masks and prunes at the schedule's rounds.
metrics.csv gains `pruning/*` (sparsity, target, per-layer sparsity); at the end the model is exported to
<exp_dir>/pruned_model (Keras SavedModel, pruning wrappers stripped) and summary.json gets its measured sparsity
and raw / gzip sizes (`pruned_*`).
"""

import dataclasses
import os

import numpy as np

from experiments import flag_groups
from tff_fl.algorithms import pruning
from tff_fl.simulation import training_loop


@dataclasses.dataclass
class PruningConfig:
  pruning_schedule: str = 'none'
  initial_sparsity: float = 0.0
  final_sparsity: float = 0.5
  pruning_begin_round: int = 1
  pruning_end_round: int = -1
  pruning_frequency: int = 1


_HELP = {
    'pruning_schedule': f"magnitude pruning schedule (tfmot): {', '.join(pruning.SCHEDULES)}",
    'initial_sparsity': 'polynomial schedule: sparsity at --pruning_begin_round',
    'final_sparsity': 'target sparsity (constant) or final sparsity (polynomial) of prunable weights, in [0, 1)',
    'pruning_begin_round': 'first round whose end prunes (schedule step = round number)',
    'pruning_end_round': 'last pruning round; -1 = never stop (constant) or --total_rounds (polynomial)',
    'pruning_frequency': 'prune every this many rounds within [begin, end]',
}


def define_flags() -> None:
  flag_groups.define_dataclass_flags(PruningConfig, _HELP)


class PruningHook(training_loop.RoundHook):
  """Exports the final model stripped of pruning wrappers; adds its measured sparsity and sizes to the summary."""
  name = 'pruning'

  def __init__(self, keras_fn, exp_dir: str):
    self.keras_fn, self.exp_dir, self.info = keras_fn, exp_dir, {}

  def on_train_end(self, process, state, summary) -> None:
    del summary
    weights = process.get_model_weights(state)
    info = pruning.export_pruned_model(self.keras_fn, weights, released_masks(state, weights),
                                       os.path.join(self.exp_dir, 'pruned_model'))
    self.info = {f'pruned_{k}': v for k, v in info.items()}

  def summary(self):
    return self.info


def released_masks(state, weights) -> list:
  """The masks of the released model `weights`: the engine state's; with --hierarchical (each cluster's edge
  prunes its own model, the global step combines them, so no one mask holds) its own non-zeros, so the export is
  the released model and its measured sparsity what the clusters' masks left."""
  if 'extensions' not in state:
    return [(np.asarray(w) != 0).astype(np.float32) for w in weights.trainable]
  return pruning.masks_of(state)


def schedule_from_config(cfg: PruningConfig, total_rounds: int):
  end = cfg.pruning_end_round
  if cfg.pruning_schedule == 'polynomial' and end == -1:
    end = total_rounds
  return pruning.build_schedule(cfg.pruning_schedule, initial_sparsity=cfg.initial_sparsity,
                                final_sparsity=cfg.final_sparsity, begin_round=cfg.pruning_begin_round,
                                end_round=end, frequency=cfg.pruning_frequency)


def configure(exp) -> None:
  cfg = flag_groups.from_flags(PruningConfig)
  schedule = schedule_from_config(cfg, exp.loop_cfg.total_rounds)
  if schedule is None:
    return
  try:
    extension = pruning.Pruning(exp.task.keras_model, schedule)
  except ValueError as e:
    raise ValueError(f'--pruning_schedule={cfg.pruning_schedule} with --model={exp.task.model_name}: {e}') from None
  exp.add_extension(extension, f'--pruning_schedule={cfg.pruning_schedule}')
  exp.hooks.append(PruningHook(exp.task.keras_model, exp.exp_dir))
