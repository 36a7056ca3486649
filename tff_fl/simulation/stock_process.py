"""`StockProcess`: a stock `tff.learning.templates.LearningProcess` behind the package's process protocol.

`--engine=tff` runs the stock export of a definition (`tff_fl.algorithms.stock`) on TFF's own runtime with one
`tf.data` dataset per reporting client, built exactly as `Task.train_dataset` (a straggler's dataset is cut to its
finished batches with `take`). It is the reference the packed engine is compared against.
"""

from tff_fl import tasks as tasks_lib
from tff_fl.engine import packing
from tff_fl.engine import process as process_lib


class StockProcess:
  """`Process` around `learning_process`; `next(state, cohort)` builds the reporters' datasets."""

  def __init__(self, learning_process, task: tasks_lib.Task, loop_cfg):
    self.learning_process, self.task, self.cfg = learning_process, task, loop_cfg

  def datasets(self, cohort: packing.Cohort) -> list:
    out = []
    for client_id, steps in zip(cohort.client_ids, cohort.steps):
      ds = self.task.train_dataset(client_id, epochs=self.cfg.client_epochs_per_round,
                                   batch_size=self.cfg.client_batch_size, seed=self.cfg.seed,
                                   round_num=cohort.round_num)
      out.append(ds if steps is None else ds.take(steps))
    return out

  def initialize(self):
    return self.learning_process.initialize()

  def next(self, state, cohort: packing.Cohort) -> process_lib.RoundOutput:
    output = self.learning_process.next(state, self.datasets(cohort))
    return process_lib.RoundOutput(output.state, output.metrics, tuple(cohort.client_ids), ())

  def get_model_weights(self, state):
    return self.learning_process.get_model_weights(state)

  def set_model_weights(self, state, weights):
    return self.learning_process.set_model_weights(state, weights)
