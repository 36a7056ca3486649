"""Stateful clients component: SCAFFOLD, FedDyn, FedPer, Ditto, top-k with error feedback, per-client evaluation.

  --algorithm=scaffold|feddyn|fedper|ditto     (in the library's registry, `tff_fl.algorithms.builders`, with their
                                          flags --scaffold_correction, --feddyn_alpha, --ditto_lambda,
                                          --fedper_head_layers; --scaffold_correction=after_step is NIID-Bench's
                                          SCAFFOLD with --client_optimizer=sgd|momentum and --client_weight_decay)
  --compression=topk_ef(fraction)         top-k uploads with per-client error feedback around ANY --algorithm
                                          (a registry wrapper: `TopKErrorFeedback(algorithm, fraction)`, plus the
                                          `compression.topk` stage in front of the model aggregator for the bits)
  --client_state_dir=DIR                  client states on disk (one .npy per client) instead of in memory;
                                          refused for algorithms without client state
  --finetune_epochs=K                     also evaluate the global model fine-tuned K local epochs per client

Client states live in a `tff_fl.simulation.client_state` store that the engine process creates through
`exp.store = store_fn(dim)` once the algorithm (and so the state size) is known. A `ClientStateHook` checkpoints
the store and per-client bookkeeping and writes clients.csv (client_id, rounds_participated, last_loss,
accuracy_global[, accuracy_finetuned][, accuracy_personal]); it joins `exp.hooks` when the process is stateful or
fine-tuning evaluation is on. The top-k stage is an `aggregator_wrappers` entry: it wraps whichever aggregator
another component set (aggregation, privacy), whatever the order they are configured in.
"""

import functools
import re

from absl import flags

from experiments import flag_groups
from tff_fl.algorithms import definition
from tff_fl.algorithms import error_feedback
from tff_fl.simulation import client_state

FLAGS = flags.FLAGS
_TOPK_EF_RE = re.compile(r'^topk_ef\(\s*([^)]*?)\s*\)$')
_STATEFUL = ('scaffold', 'feddyn', 'fedper', 'ditto')


def define_flags():
  flag_groups.define_flag('string', 'compression', '', "uplink compression with client state: '' (none) or "
                          'topk_ef(fraction), top-k sparsification with error feedback around any --algorithm')
  flag_groups.define_flag('string', 'client_state_dir', '', 'directory for per-client state on disk (one per '
                          'experiment); empty = in memory')
  flag_groups.define_flag('integer', 'finetune_epochs', 0, 'also evaluate the global model after this many local '
                          'fine-tuning epochs per client (0 = off)')


def parse_compression(spec: str):
  """'' -> None; 'topk_ef(f)' -> f (float in (0, 1]); anything else a one-line ValueError."""
  if not spec:
    return None
  match = _TOPK_EF_RE.match(spec.strip())
  try:
    fraction = float(match.group(1)) if match else None
  except ValueError:
    fraction = None
  if fraction is None or not 0.0 < fraction <= 1.0:
    raise ValueError(f"--compression must be '' or topk_ef(fraction) with fraction in (0, 1]; got '{spec}'.")
  return fraction


def _validate(exp):
  del exp
  if FLAGS.finetune_epochs < 0:
    raise ValueError(f'--finetune_epochs must be >= 0; got {FLAGS.finetune_epochs}.')
  return parse_compression(FLAGS.compression)


def configure(exp):
  fraction = _validate(exp)
  if fraction is not None:  # The server side of top-k EF: the sparsifying stage (identity on k-sparse) + bits.
    exp.aggregator_wrappers.append(lambda inner: error_feedback.aggregator(fraction, inner=inner))
  exp.algorithm_wrappers.append(functools.partial(_wrap, fraction=fraction, compression=FLAGS.compression,
                                                  state_dir=FLAGS.client_state_dir))
  hook = client_state.ClientStateHook(exp.task.client_ids, exp.exp_dir)
  finetune_epochs, cfg = FLAGS.finetune_epochs, exp.loop_cfg
  if finetune_epochs > 0:
    hook.evaluators['global'] = lambda process, state: _global_accuracies(exp, process, state)
    hook.evaluators['finetuned'] = lambda process, state: _evaluation().finetuned_accuracies(
        exp.task, process.get_model_weights(state), exp.client_optimizer, epochs=finetune_epochs,
        batch_size=cfg.client_batch_size, seed=cfg.seed, **_eval_arrays(exp))
    exp.hooks.append(hook)
  state_dir = FLAGS.client_state_dir

  def store_fn(dim):  # Called by the engine process of a stateful algorithm (exp.algorithm is set by then).
    hook.store = client_state.make_store(dim, state_dir)
    hook.evaluators.setdefault('global', lambda process, state: _global_accuracies(exp, process, state))
    if _personalized(exp.algorithm):
      hook.evaluators['personal'] = lambda process, state: _evaluation().personal_accuracies(
          process, state, exp.task, **_eval_arrays(exp))
    if hook not in exp.hooks:
      exp.hooks.append(hook)
    return hook.store

  exp.store = store_fn


def _wrap(exp, algorithm: definition.Algorithm, *, fraction, compression: str,
          state_dir: str) -> definition.Algorithm:
  """The experiment's algorithm wrapper: top-k EF around its algorithm; refuses --client_state_dir without state."""
  if fraction is not None:
    if exp.engine == 'tff':
      raise ValueError(f'--compression={compression} keeps a residual per client; --engine=tff runs '
                       'stateless algorithms only. Use --engine=packed.')
    algorithm = error_feedback.TopKErrorFeedback(algorithm, fraction)
  if state_dir and type(algorithm).client_state is definition.Algorithm.client_state:
    raise ValueError(f'--client_state_dir applies to algorithms with client state ({", ".join(_STATEFUL)}, or any '
                     f'with --compression=topk_ef(fraction)); got --algorithm={exp.algo_cfg.algorithm}.')
  return algorithm


def _personalized(algorithm) -> bool:
  """True if `algorithm` (or the one it wraps, `.inner`) deploys per-client models (`personal_weights`)."""
  while isinstance(getattr(algorithm, 'inner', None), definition.Algorithm):
    algorithm = algorithm.inner
  return type(algorithm).personal_weights is not definition.Algorithm.personal_weights


def _evaluation():
  # PENDING (packed evaluation, another engineer): tff_fl/engine/evaluation.py with client_accuracies,
  # personal_accuracies and finetuned_accuracies is not on main yet; the evaluators call it at the end of training.
  from tff_fl.engine import evaluation  # pylint: disable=g-import-not-at-top
  return evaluation


def _eval_arrays(exp) -> dict:
  """The evaluation data a component substituted (e.g. normalised inputs), if any, as evaluation keywords."""
  return {} if exp.eval_arrays is None else {'eval_arrays': exp.eval_arrays}


def _global_accuracies(exp, process, state):
  return _evaluation().client_accuracies(exp.task, process.get_model_weights(state), **_eval_arrays(exp))
