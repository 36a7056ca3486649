"""`Experiment`: what the binary assembles from flags before the training loop runs."""

import dataclasses
from typing import Any, Callable, Optional

import tensorflow_federated as tff

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
  # (experiment) -> process replacing the algorithm registry's builder (pruning, the fast engine); at most one.
  process_builder: Optional[Callable] = None
  process_builder_flag: str = ''  # The flag that set `process_builder`, for error messages.
  # process -> process, applied in order to the built process (drift measurement, preprocessing, worker checks).
  process_wrappers: list = dataclasses.field(default_factory=list)
  process: Any = None

  def replace_process_builder(self, builder: Callable, flag: str) -> None:
    """Makes `builder(self)` build the process; a second replacement is a one-line ValueError naming both flags."""
    if self.process_builder is not None:
      raise ValueError(f'{flag} builds its own process and cannot be combined with {self.process_builder_flag}.')
    self.process_builder, self.process_builder_flag = builder, flag

  def wrap_learning_process(self, wrap: Callable, flag: str) -> None:
    """Appends `wrap` to `process_wrappers`; it needs a tff.learning LearningProcess (ValueError naming `flag`)."""
    def checked(process):
      if not isinstance(process, tff.learning.templates.LearningProcess):
        raise ValueError(f'{flag} needs an algorithm built as a tff.learning LearningProcess; --algorithm='
                         f'{self.algo_cfg.algorithm} builds a {type(process).__name__}.')
      return wrap(process)
    self.process_wrappers.append(checked)

  def build_process(self):
    """The process: `process_builder` (or the algorithm registry's builder), then each of `process_wrappers`."""
    process = (self.process_builder or builders.build_process)(self)
    for wrap in self.process_wrappers:
      process = wrap(process)
    self.process = process
    return process
