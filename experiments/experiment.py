"""`Experiment`: what the binary assembles from flags before the training loop runs.

Components contribute declared parts; none replaces the process or another component's objects, and none reads a
part another component declares while configuring (so the result does not depend on the order components run in;
tests/experiments/test_component_order.py):
  algorithm      the registry (`tff_fl.algorithms.builders`) builds an `Algorithm` definition from the flags
  algorithm_wrappers  fn(experiment, algorithm) -> Algorithm, applied in order (top-k with error feedback)
  extensions     `tff_fl.algorithms.extension.Extension`s applied to the round's stages (attacks, pruning, drift,
                 augmentation / normalisation, DP-SGD)
  model_aggregator  any `tff.aggregators` factory, set once (`set_model_aggregator`: --aggregator or --dp);
                 `aggregator_wrappers` (fn(factory or None) -> factory, e.g. top-k EF's sparsifying stage) wrap it
                 when the process is built
  sampler        .sample(round_num) -> sampled client ids; set once (`set_sampler`)
  participation  (round_num, sampled ids) -> `tff_fl.engine.Cohort` (who reports, partial work); set once
  hooks          training-loop `RoundHook`s
  store          client-state store for stateful algorithms (`tff_fl.simulation.client_state`), or store_fn(dim)
  eval_arrays    client id -> (x, y) evaluation arrays when a component changes the input representation; set once
  process_factory  (experiment) -> Process for algorithms that run several engine rounds per round (hierarchical)
  build_checks   (experiment) -> None, run once every component is configured and the algorithm definition is
                 built, before the process is: checks that look at parts several components declared (e.g. the
                 engine and the DP aggregator, the algorithm's uploads under --dp)
  process_checks (process) -> None, run on the built process before training (e.g. it splits over workers)
A part set twice is a one-line ValueError naming both components' flags.
The process is built last, by `build_process`: the packed engine (default) or, with `--engine=tff`, the stock
`tff.learning` process of the same definition run by TFF's own runtime on `tf.data` datasets.
"""

import dataclasses
from typing import Any, Callable, Optional

from tff_fl import engine as engine_lib
from tff_fl import tasks as tasks_lib
from tff_fl.algorithms import builders
from tff_fl.algorithms import stock
from tff_fl.simulation import stock_process
from tff_fl.simulation import training_loop

ENGINES = ('packed', 'tff')


def process_error(e: ValueError) -> ValueError:
  """A library ValueError from building the engine process, reworded with the flags that set the argument."""
  message = str(e)
  if message.startswith('model_aggregator '):
    return ValueError(f'--aggregator / --dp: {message}')
  if message.startswith('client_axis=True'):
    return ValueError('--client_axis=true' + message[len('client_axis=True'):])
  return e


@dataclasses.dataclass
class Experiment:
  """Task, configs and the components' declared parts (module docstring)."""
  task: tasks_lib.Task
  task_cfg: tasks_lib.TaskConfig
  algo_cfg: builders.AlgorithmConfig
  loop_cfg: training_loop.LoopConfig
  client_optimizer: Any
  server_optimizer: Any
  exp_dir: str
  model_aggregator: Any = None  # Any tff.aggregators factory; None = MeanFactory. Set with set_model_aggregator.
  model_aggregator_flag: str = ''
  aggregator_wrappers: list = dataclasses.field(default_factory=list)
  sampler: Any = None  # .sample(round_num) -> list of client ids; None = uniform. Set with set_sampler.
  sampler_flag: str = ''
  participation: Optional[Callable] = None  # (round_num, sampled ids) -> engine.Cohort; None = all report.
  participation_flag: str = ''
  extensions: list = dataclasses.field(default_factory=list)
  algorithm_wrappers: list = dataclasses.field(default_factory=list)
  extension_flags: dict = dataclasses.field(default_factory=dict)  # extension name -> the flag that added it
  hooks: list = dataclasses.field(default_factory=list)
  store: Any = None  # Client-state store, or store_fn(state_dim) -> store; None = in memory.
  eval_arrays: Any = None  # client id -> (x, y) evaluation arrays; None = the task's test split. set_eval_arrays.
  eval_arrays_flag: str = ''
  process_factory: Optional[Callable] = None  # (experiment) -> Process (hierarchical).
  build_checks: list = dataclasses.field(default_factory=list)
  process_checks: list = dataclasses.field(default_factory=list)
  release: Any = None  # outputs.ReleasePolicy under --dp / --sample_dp; None = everything is written.
  engine: str = 'packed'  # 'packed' or 'tff'.
  engine_slots: int = 1
  engine_runtime: Optional[str] = None  # 'local' / 'tff' (`tff_fl.engine.build_process`); None = by slots.
  client_axis: Optional[bool] = None  # `tff_fl.engine.build_process`'s client_axis (--client_axis).
  algorithm: Any = None  # The Algorithm definition, set by build_process.
  process: Any = None

  def _set_once(self, part: str, value, flag: str, what: str) -> None:
    if getattr(self, part) is not None:
      first, second = sorted((flag, getattr(self, part + '_flag')))  # The same words in any component order.
      raise ValueError(f'{first} and {second} both {what}; use one.')
    setattr(self, part, value)
    setattr(self, part + '_flag', flag)

  def set_participation(self, participation: Callable, flag: str) -> None:
    """Sets who reports each round; a second component doing so is a one-line ValueError naming both flags."""
    self._set_once('participation', participation, flag, 'decide which clients report')

  def set_sampler(self, sampler, flag: str) -> None:
    """Sets who is sampled each round (once; see `set_participation`)."""
    self._set_once('sampler', sampler, flag, 'choose the clients sampled each round')

  def set_model_aggregator(self, factory, flag: str) -> None:
    """Sets the model-update aggregator (once; see `set_participation`)."""
    self._set_once('model_aggregator', factory, flag, 'set the model update aggregator')

  def set_eval_arrays(self, eval_arrays, flag: str) -> None:
    """Sets the evaluation arrays (once; see `set_participation`)."""
    self._set_once('eval_arrays', eval_arrays, flag, 'change the evaluation data')

  def aggregator(self):
    """The model aggregator the process gets: the one set (or None = mean), inside `aggregator_wrappers`."""
    factory = self.model_aggregator
    for wrap in self.aggregator_wrappers:
      factory = wrap(factory)
    return factory

  def add_extension(self, extension, flag: str) -> None:
    """Adds an extension of the round; `flag` (e.g. '--pruning_schedule=constant') names it in refusals."""
    self.extensions.append(extension)
    self.extension_flags[extension.name] = flag

  def build_process(self):
    """The algorithm definition from the registry, then the process that runs it (module docstring)."""
    self.algorithm = builders.build_algorithm(self)
    for check in self.build_checks:  # Before anything is traced; they may look at the algorithm definition.
      check(self)
    if self.process_factory is not None:
      self.process = self.process_factory(self)
    elif self.engine == 'tff':
      self.process = self._stock_process()
    else:
      self.process = self._engine_process(self.loop_cfg)
    for check in self.process_checks:
      check(self.process)
    return self.process

  def _engine_process(self, loop):
    try:
      return engine_lib.build_task_process(
          self.algorithm, self.task, epochs=loop.client_epochs_per_round, batch_size=loop.client_batch_size,
          seed=loop.seed, client_optimizer=self.client_optimizer, server_optimizer=self.server_optimizer,
          model_aggregator=self.aggregator(), client_weighting=builders.weighting(self.algo_cfg),
          extensions=self.extensions, num_slots=self.engine_slots, store=self.store,
          runtime=self.engine_runtime, client_axis=self.client_axis)
    except ValueError as e:  # The library names its argument; the binary's user set it with --aggregator / --dp.
      raise process_error(e) from None

  def _stock_process(self):
    if not self.algorithm.stateless or self.extensions:
      used = (', '.join(self.extension_flags.get(e.name, e.name) for e in self.extensions)
              or f'--algorithm={self.algo_cfg.algorithm}')
      raise ValueError(f'--engine=tff runs stateless algorithms (fedavg, fedprox, fedsgd, fednova) without '
                       f'extensions as stock TFF processes; got {used}. Use --engine=packed.')
    learning_process = stock.build_learning_process(
        self.algorithm, self.task.model_fn, self.client_optimizer, self.server_optimizer,
        client_weighting=builders.weighting(self.algo_cfg), model_aggregator=self.aggregator())
    return stock_process.StockProcess(learning_process, self.task, self.loop_cfg)
