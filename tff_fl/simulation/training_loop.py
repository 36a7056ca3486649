"""The one training loop: sample cohort ► run round ► evaluate ► release metrics ► checkpoint.

Resumes from the newest checkpoint in `<exp_dir>/checkpoints` (refusing one written by another configuration); the
cohort and client data order of a round depend only on (seed, round, client), so a resumed run reproduces an
uninterrupted one. Components extend the loop through hooks (see `RoundHook`) rather than copies of it.
"""

import collections
import dataclasses
import re
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from tff_fl import engine
from tff_fl import tasks as tasks_lib
from tff_fl.engine import evaluation
from tff_fl.simulation import checkpoint as checkpoint_lib
from tff_fl.simulation import contexts
from tff_fl.simulation import outputs as outputs_lib
from tff_fl.simulation import sampling


@dataclasses.dataclass
class LoopConfig:
  total_rounds: int = 10
  clients_per_round: int = 10
  client_epochs_per_round: int = 1
  client_batch_size: int = 10
  rounds_per_eval: int = 1
  rounds_per_checkpoint: int = 1
  eval_clients: int = 0
  seed: int = 0

  def validate(self) -> None:
    for name in ('total_rounds', 'clients_per_round', 'client_epochs_per_round', 'client_batch_size',
                 'rounds_per_eval', 'rounds_per_checkpoint'):
      if getattr(self, name) < 1:
        raise ValueError(f'--{name} must be >= 1; got {getattr(self, name)}.')
    if self.eval_clients < 0:
      raise ValueError(f'--eval_clients must be >= 0 (0 = every client); got {self.eval_clients}.')


_TF_ASSERT_RE = re.compile(r'assertion failed: ((?:\[[^\]]*\]\s*)+)')


def computation_assertion_error(round_num: int, error: BaseException) -> Optional[ValueError]:
  """A one-line ValueError for a failed `tf.debugging.assert_*` inside a round's computation (e.g. a robust
  aggregator told fewer reporting clients than it needs), or None for any other error. TFF's worker reports those
  as gRPC errors whose text holds the assertion's bracketed message parts."""
  match = _TF_ASSERT_RE.search(str(error))
  if match is None:
    return None
  message = ' '.join(part.strip() for part in re.findall(r'\[([^\]]*)\]', match.group(1)))
  return ValueError(f'round {round_num}: {message} (no state was saved for this round; the last checkpoint is '
                    'intact).')


class RoundHook:
  """Extension point of the loop; every method is optional to override.

  `stop_before(round_num)` returns a reason to stop before running that round (e.g. a privacy budget), or None.
  `after_round(round_num, output, row)` adds columns to the round's metrics row.
  `checkpoint_arrays()` / `restore_arrays(arrays)` save and restore the hook's own state with each checkpoint.
  `on_train_end(process, state, summary)` sees the final state; `summary()` adds keys to summary.json.
  `release`: the run's `outputs.ReleasePolicy` (None = everything is written), set by `run_training`; a hook that
  writes its own file asks `release.allows(file name)` first.
  """
  name = 'hook'
  release: Optional[outputs_lib.ReleasePolicy] = None

  def stop_before(self, round_num: int) -> Optional[str]:
    del round_num
    return None

  def after_round(self, round_num: int, output, row: dict[str, Any]) -> None:
    del round_num, output, row

  def checkpoint_arrays(self) -> dict[str, np.ndarray]:
    return {}

  def restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
    del arrays

  def on_train_end(self, process, state, summary: dict[str, Any]) -> None:
    """Called once with the released model's state, before summary.json is written (e.g. to export it)."""
    del process, state, summary

  def summary(self) -> dict[str, Any]:
    return {}


def run_training(process: engine.Process, task: tasks_lib.Task, cfg: LoopConfig,
                 exp_dir: str, hparams: dict[str, Any], *, fingerprint: Optional[dict[str, Any]] = None,
                 fingerprint_defaults: Optional[dict[str, Any]] = None, sampler=None,
                 participation: Optional[Callable[[int, Sequence[str]], engine.Cohort]] = None,
                 hooks: Sequence[RoundHook] = (),
                 eval_arrays: Optional[Mapping[str, tuple]] = None,
                 release: Optional[outputs_lib.ReleasePolicy] = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or resumes) training; returns the summary also written to `summary.json`.

  `participation(round, sampled ids)` says who reports (default: every sampled client, full work).
  `eval_arrays` (client id -> (x, y)) is every client's evaluation data (default the task's test split); components
  that change the input representation (e.g. normalisation) supply it so evaluation sees what training saw. It is
  evaluated packed on the engine (`tff_fl.engine.evaluation`), every client of the task each eval round, or with
  `cfg.eval_clients` = N > 0 a sample of N clients seeded by (seed, round) (`sampling.eval_sample`; metrics
  `eval_sampled_clients` = N and `eval_population` say so).
  `release` (a run with a privacy claim): only what it allows is written (metrics.csv, TensorBoard, summary.json,
  hooks' files) or logged.
  """
  cfg.validate()
  if cfg.eval_clients > len(task.client_ids):
    raise ValueError(f'--eval_clients must be <= --num_clients ({len(task.client_ids)}); got {cfg.eval_clients}.')
  contexts.ensure_local_cpp_context()  # Evaluation and stock processes invoke TFF computations.
  sampler = sampler or sampling.UniformSampler(task.client_ids, cfg.clients_per_round, cfg.seed)
  participation = participation or engine.Cohort.full
  outputs = outputs_lib.ExperimentOutputs(exp_dir, release=release)
  for hook in hooks:
    hook.release = release
  ckpt = checkpoint_lib.CheckpointManager(f'{exp_dir}/checkpoints', fingerprint if fingerprint is not None
                                          else {k: v for k, v in hparams.items() if k != 'total_rounds'},
                                          defaults=fingerprint_defaults)
  ckpt.check_config()
  outputs.write_json('hparams.json', hparams)

  state = process.initialize()
  start_round = ckpt.latest_round()
  if start_round is None:
    state = process.set_model_weights(state, task.initial_weights(cfg.seed))
    start_round = 0
  else:
    start_round, state, extras = ckpt.restore(state)
    for hook in hooks:
      hook.restore_arrays({k[len(hook.name) + 1:]: v for k, v in extras.items() if k.startswith(hook.name + '/')})
    log(f'Resumed from checkpoint at round {start_round}.')
  outputs.load_rows(start_round if start_round > 0 else None)
  if start_round > 0:
    outputs.rewrite_tensorboard()

  evaluator = evaluation.task_evaluator(task, eval_arrays)
  last_eval, evaluated_round, stop_reason = None, None, 'completed'

  def evaluate():
    if not cfg.eval_clients:
      return evaluation.summarize(task.client_ids, evaluator(process.get_model_weights(state), task.client_ids))
    ids = sampling.eval_sample(task.client_ids, cfg.eval_clients, cfg.seed, round_num)
    summary = evaluation.summarize(ids, evaluator(process.get_model_weights(state), ids))
    summary.update(eval_sampled_clients=len(ids), eval_population=len(task.client_ids))
    return summary

  def save(round_num):
    extras = {}
    for hook in hooks:
      extras.update({f'{hook.name}/{k}': v for k, v in hook.checkpoint_arrays().items()})
    ckpt.save(round_num, state, extras)

  start_time = time.time()
  round_num = start_round
  for round_num in range(start_round + 1, cfg.total_rounds + 1):
    reason = next((r for r in (h.stop_before(round_num) for h in hooks) if r), None)
    if reason:
      stop_reason = reason
      round_num -= 1
      log(f'Stopping before round {round_num + 1}: {reason}')
      break
    t0 = time.time()
    cohort = sampler.sample(round_num)
    try:
      output = process.next(state, participation(round_num, cohort))
    except Exception as e:  # pylint: disable=broad-except
      error = computation_assertion_error(round_num, e)
      if error is None:
        raise
      raise error from None
    state = output.state
    train = output.metrics['client_work']['train']
    row = collections.OrderedDict(round=round_num, round_seconds=0.0, clients=len(cohort),
                                  train_loss=outputs_lib.to_scalar(train['loss']),
                                  train_accuracy=outputs_lib.to_scalar(train.get('sparse_categorical_accuracy',
                                                                                 train.get('masked_accuracy'))))
    row.update(outputs_lib.flatten_metrics(output.metrics))
    for hook in hooks:
      hook.after_round(round_num, output, row)
    row['round_seconds'] = time.time() - t0
    if round_num % cfg.rounds_per_eval == 0 or round_num == cfg.total_rounds:
      last_eval, evaluated_round = evaluate(), round_num
      row.update((k, v) for k, v in last_eval.items() if k != 'per_client_accuracy')
    row = outputs.add_row(row)
    if round_num % cfg.rounds_per_checkpoint == 0 or round_num == cfg.total_rounds:
      save(round_num)
    log(_progress_line(row, cfg.total_rounds))

  if evaluated_round != round_num:
    last_eval = evaluate()  # Resumed at the end, or stopped early: evaluate the model we release.
  if stop_reason != 'completed':
    save(round_num)
  summary = collections.OrderedDict(rounds_completed=round_num, stop_reason=stop_reason)
  summary.update(last_eval)
  summary['train_seconds_this_run'] = time.time() - start_time
  for hook in hooks:
    hook.on_train_end(process, state, summary)
    summary.update(hook.summary())
  summary['hparams'] = hparams
  summary = outputs.write_summary(summary)
  outputs.close()
  log(_done_line(round_num, summary, exp_dir))
  return summary


def _done_line(round_num, summary, exp_dir) -> str:
  parts = [f"Done: {round_num} rounds, eval accuracy {summary['eval_accuracy']:.4f}"]
  if 'client_accuracy_p10' in summary:  # Not under a release policy that suppresses per-client evaluation.
    parts.append(f" (per-client p10 {summary['client_accuracy_p10']:.3f}, median {summary['client_accuracy_p50']:.3f})")
  return ''.join(parts) + f", eval loss {summary['eval_loss']:.4f}. Outputs in {exp_dir}"


def _progress_line(row, total_rounds) -> str:
  parts = [f"round {row['round']:4d}/{total_rounds}"]
  if 'train_loss' in row:
    parts.append(f"train_loss {row['train_loss']:.4f}")
  if 'eval_accuracy' in row:
    parts.append(f"eval_accuracy {row['eval_accuracy']:.4f}")
  parts.append(f"{row['round_seconds']:.2f}s")
  return '  '.join(parts)
