"""Stateful clients component: SCAFFOLD, FedDyn, FedNova, FedPer, Ditto, top-k with error feedback, fine-tuning eval.

  --algorithm=scaffold|feddyn|fednova|fedper|ditto     (registered here)
  --feddyn_alpha=A                        FedDyn's dynamic regulariser weight alpha
  --ditto_lambda=L                        Ditto: pull of the personal models towards the global model
  --compression=topk_ef(fraction)         FedAvg with top-k uploads and per-client error feedback
  --client_state_dir=DIR                  client states on disk (one .npy per client) instead of in memory
  --fedper_head_layers=N                  last N layers with weights are personal (FedPer)
  --finetune_epochs=K                     also evaluate the global model fine-tuned K local epochs per client

Stateful algorithms run as `StoreAdapter(process, store)`; client inputs are (dataset, client_id) pairs. The store
and per-client bookkeeping are checkpointed by a `ClientStateHook`, which writes clients.csv (client_id,
rounds_participated, last_loss, accuracy_global[, accuracy_personal][, accuracy_finetuned]). Client inputs set by
an earlier component (regimes / stragglers: dropouts, partial local work, which FedNova normalizes) are wrapped:
their datasets are paired with the ids of the clients that reported. Must come after those in COMPONENTS.
"""

import re

from absl import flags

from experiments import flag_groups
from tff_fl.algorithms import builders
from tff_fl.algorithms import ditto
from tff_fl.algorithms import error_feedback
from tff_fl.algorithms import feddyn
from tff_fl.algorithms import fedper
from tff_fl.algorithms import fednova
from tff_fl.algorithms import scaffold
from tff_fl.algorithms import stateful_process
from tff_fl.simulation import client_state
from tff_fl.simulation import evaluation
from tff_fl.simulation import regimes
from tff_fl.simulation import training_loop

FLAGS = flags.FLAGS
_TOPK_EF_RE = re.compile(r'^topk_ef\(\s*([^)]*?)\s*\)$')
_EVAL_CHUNK = 100  # Clients per personalized/fine-tuning evaluation call (bounds memory with the disk store).
_STATEFUL = ('scaffold', 'feddyn', 'fedper', 'ditto', 'fedavg_topk_ef')
_hook = None  # The ClientStateHook of the experiment being configured; builders attach store and evaluators.


def define_flags():
  flag_groups.define_flag('string', 'compression', '', "uplink compression with client state: '' (none) or "
                          'topk_ef(fraction), top-k sparsification with error feedback (needs --algorithm=fedavg)')
  flag_groups.define_flag('string', 'client_state_dir', '', 'directory for per-client state on disk (one per '
                          'experiment); empty = in memory')
  flag_groups.define_flag('float', 'feddyn_alpha', 0.01, 'FedDyn: weight alpha of the dynamic regulariser (> 0)')
  flag_groups.define_flag('float', 'ditto_lambda', 0.1, 'Ditto: weight lambda of the personal models\' proximal '
                          'term towards the global model (>= 0)')
  flag_groups.define_flag('integer', 'fedper_head_layers', 1, 'FedPer: number of final layers kept per client')
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
  algorithm, fraction = exp.algo_cfg.algorithm, parse_compression(FLAGS.compression)
  if fraction is not None and algorithm != 'fedavg':
    raise ValueError(f'--compression=topk_ef(...) needs --algorithm=fedavg; got --algorithm={algorithm}.')
  if algorithm == 'fedavg_topk_ef' and fraction is None:
    raise ValueError('--algorithm=fedavg_topk_ef is internal; use --algorithm=fedavg --compression=topk_ef(f).')
  if algorithm == 'scaffold' and FLAGS.client_optimizer != 'sgd':
    raise ValueError(f'--algorithm=scaffold needs --client_optimizer=sgd; got {FLAGS.client_optimizer}.')
  if algorithm == 'fednova' and FLAGS.client_optimizer not in ('sgd', 'momentum'):
    raise ValueError(f'--algorithm=fednova needs --client_optimizer=sgd or momentum; got {FLAGS.client_optimizer}.')
  stateful = algorithm in _STATEFUL or fraction is not None
  if FLAGS.client_state_dir and not stateful:
    raise ValueError('--client_state_dir applies to --algorithm=scaffold|feddyn|fedper|ditto or '
                     '--compression=topk_ef(...); '
                     f'got --algorithm={algorithm}.')
  if algorithm == 'feddyn' and not FLAGS.feddyn_alpha > 0:
    raise ValueError(f'--feddyn_alpha must be > 0; got {FLAGS.feddyn_alpha}.')
  if algorithm == 'ditto' and not FLAGS.ditto_lambda >= 0:
    raise ValueError(f'--ditto_lambda must be >= 0; got {FLAGS.ditto_lambda}.')
  if FLAGS.fedper_head_layers < 1:
    raise ValueError(f'--fedper_head_layers must be >= 1; got {FLAGS.fedper_head_layers}.')
  if FLAGS.finetune_epochs < 0:
    raise ValueError(f'--finetune_epochs must be >= 0; got {FLAGS.finetune_epochs}.')
  return stateful, fraction


def configure(exp):
  global _hook
  stateful, fraction = _validate(exp)
  if fraction is not None:
    exp.algo_cfg.algorithm = 'fedavg_topk_ef'
  active = stateful or exp.algo_cfg.algorithm == 'fednova' or FLAGS.finetune_epochs > 0
  if not active:
    _hook = None
    return
  _hook = client_state.ClientStateHook(exp.task.client_ids, exp.exp_dir)
  _hook.evaluators['global'] = lambda process, state: _global_accuracy(exp, process, state)
  if FLAGS.finetune_epochs > 0:
    _hook.evaluators['finetuned'] = lambda process, state: _finetuned_accuracy(exp, process, state)
  exp.hooks.append(_hook)
  exp.client_inputs_fn = _client_inputs(exp, _hook, pairs=stateful)


def _client_inputs(exp, hook, pairs: bool):
  """(round, cohort) -> datasets of the reporting clients, as (dataset, client_id) pairs when `pairs`."""
  base = exp.client_inputs_fn or training_loop.default_client_inputs(exp.task, exp.loop_cfg)

  def client_inputs(round_num, cohort):
    datasets = base(round_num, cohort)
    reported = regimes.reported_clients(base, cohort, len(datasets))  # Dropped clients send nothing.
    hook.note_cohort(reported)
    return list(zip(datasets, reported)) if pairs else datasets

  return client_inputs


def _accuracies(client_ids, results) -> dict:
  return {cid: (float(r['correct'] / r['num_predictions']) if r['num_predictions'] > 0 else None)
          for cid, r in zip(client_ids, results)}


def _chunks(ids):
  return [ids[i:i + _EVAL_CHUNK] for i in range(0, len(ids), _EVAL_CHUNK)]


def _global_accuracy(exp, process, state):
  eval_fn, ids = evaluation.build_per_client_eval(exp.task.model_fn), exp.task.client_ids
  return _accuracies(ids, eval_fn(process.get_model_weights(state), [exp.task.eval_dataset(c) for c in ids]))


def _finetuned_accuracy(exp, process, state):
  eval_fn = fedper.build_finetune_eval(exp.task.model_fn, exp.client_optimizer)
  weights, cfg, acc = process.get_model_weights(state), exp.loop_cfg, {}
  for ids in _chunks(exp.task.client_ids):
    train = [exp.task.train_dataset(c, epochs=FLAGS.finetune_epochs, batch_size=cfg.client_batch_size,
                                    seed=cfg.seed, round_num=0) for c in ids]
    acc.update(_accuracies(ids, eval_fn(weights, train, [exp.task.eval_dataset(c) for c in ids])))
  return acc


def _personal_accuracy(exp, adapter, personalize, process, state):
  eval_fn = fedper.build_client_state_eval(exp.task.model_fn, adapter.process.client_state_type, personalize)
  weights, acc = process.get_model_weights(state), {}
  for ids in _chunks(exp.task.client_ids):
    acc.update(_accuracies(ids, eval_fn(weights, adapter.client_states(ids), [exp.task.eval_dataset(c) for c in ids])))
  return acc


def _adapter(process):
  store = client_state.make_store(stateful_process.state_dim(process), FLAGS.client_state_dir)
  _hook.store = store
  return stateful_process.StoreAdapter(process, store)


def _weighting(exp):
  return builders.WEIGHTINGS[exp.algo_cfg.client_weighting]


def _scaffold(exp):
  process = scaffold.build_scaffold(exp.task.model_fn, FLAGS.client_learning_rate, len(exp.task.client_ids),
                                    exp.server_optimizer, client_weighting=_weighting(exp),
                                    model_aggregator=exp.model_aggregator)
  return _adapter(process)


def _feddyn(exp):
  process = feddyn.build_feddyn(exp.task.model_fn, exp.client_optimizer, FLAGS.feddyn_alpha,
                                len(exp.task.client_ids), exp.server_optimizer, client_weighting=_weighting(exp),
                                model_aggregator=exp.model_aggregator)
  return _adapter(process)


def _fednova(exp):
  momentum = FLAGS.client_momentum if FLAGS.client_optimizer == 'momentum' else 0.0
  return fednova.build_fednova(exp.task.model_fn, FLAGS.client_learning_rate, exp.server_optimizer,
                               client_momentum=momentum, client_weighting=_weighting(exp),
                               model_aggregator=exp.model_aggregator)


def _fedper(exp):
  head_size = fedper.head_size_from_layers(exp.task.keras_model(), FLAGS.fedper_head_layers)
  process = fedper.build_fedper(exp.task.model_fn, exp.client_optimizer, head_size, exp.server_optimizer,
                                client_weighting=_weighting(exp), model_aggregator=exp.model_aggregator)
  adapter = _adapter(process)
  personalize = lambda w, s: fedper.personal_weights(w, s, head_size)
  _hook.evaluators['personal'] = lambda p, s: _personal_accuracy(exp, adapter, personalize, p, s)
  return adapter


def _ditto(exp):
  process = ditto.build_ditto(exp.task.model_fn, exp.client_optimizer, FLAGS.ditto_lambda, exp.server_optimizer,
                              client_weighting=_weighting(exp), model_aggregator=exp.model_aggregator)
  adapter = _adapter(process)
  _hook.evaluators['personal'] = lambda p, s: _personal_accuracy(exp, adapter, ditto.personal_model, p, s)
  return adapter


def _topk_ef(exp):
  process = error_feedback.build_topk_error_feedback(
      exp.task.model_fn, exp.client_optimizer, parse_compression(FLAGS.compression), exp.server_optimizer,
      client_weighting=_weighting(exp), model_aggregator=exp.model_aggregator)
  return _adapter(process)


builders.register('scaffold', _scaffold)
builders.register('feddyn', _feddyn)
builders.register('fednova', _fednova)
builders.register('fedper', _fedper)
builders.register('ditto', _ditto)
builders.register('fedavg_topk_ef', _topk_ef)
