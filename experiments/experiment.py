"""`Experiment`: what the binary assembles from flags before the training loop runs."""

import dataclasses
from typing import Any, Callable, Optional

from tff_fl import tasks as tasks_lib
from tff_fl.algorithms import builders
from tff_fl.simulation import training_loop


@dataclasses.dataclass
class Experiment:
  """Task, configs and the components' contributions. `process` is built last, from the algorithm registry."""
  task: tasks_lib.Task
  task_cfg: tasks_lib.TaskConfig
  algo_cfg: builders.AlgorithmConfig
  loop_cfg: training_loop.LoopConfig
  client_optimizer: Any
  server_optimizer: Any
  exp_dir: str
  model_aggregator: Any = None  # Any tff.aggregators factory; None = MeanFactory.
  sampler: Any = None  # .sample(round_num) -> list of client ids; None = uniform.
  client_inputs_fn: Optional[Callable] = None  # (round_num, client_ids) -> per-client process inputs.
  hooks: list = dataclasses.field(default_factory=list)
  eval_dataset_fn: Optional[Callable] = None  # client id -> batched eval dataset; None = task.eval_dataset.
  # ClientWorkProcess -> ClientWorkProcess, applied in order by the built-in algorithms (e.g. attacks).
  client_work_wrappers: list = dataclasses.field(default_factory=list)
  # (experiment) -> ClientWorkProcess replacing local SGD in fedavg/fedprox (e.g. sample-level DP-SGD); None = SGD.
  client_work_builder: Optional[Callable] = None
  process: Any = None

  def build_process(self):
    self.process = builders.build_process(self)
    return self.process
