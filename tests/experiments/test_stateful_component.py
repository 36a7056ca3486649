"""The stateful component wired into an Experiment: registry builders, top-k EF around any algorithm (wrapper +
aggregator stage), the lazily sized store, the ClientStateHook with its evaluators, and its refusals."""

import csv
import types

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

import experiments.train  # pylint: disable=unused-import  (defines every flag of the binary)
from experiments import experiment as experiment_lib
from experiments import flag_groups
from experiments.components import stateful
from tff_fl import engine
from tff_fl import tasks as tasks_lib
from tff_fl.algorithms import builders
from tff_fl.algorithms import ditto
from tff_fl.algorithms import error_feedback
from tff_fl.algorithms import fed_avg
from tff_fl.simulation import client_state
from tff_fl.simulation import training_loop

FLAGS = flags.FLAGS
SMALL = dict(task='digits', model='logreg', num_clients=6, clients_per_round=3, client_batch_size=20)


def _experiment(tmp_path, **values):
  """An Experiment configured by the stateful component alone, from flags SMALL + `values` (already set)."""
  if not FLAGS.is_parsed():
    FLAGS(['test'])
  task_cfg = flag_groups.from_flags(tasks_lib.TaskConfig)
  exp = experiment_lib.Experiment(
      tasks_lib.build_task(task_cfg), task_cfg, flag_groups.from_flags(builders.AlgorithmConfig),
      flag_groups.from_flags(training_loop.LoopConfig), flag_groups.optimizer_from_flags('client'),
      flag_groups.optimizer_from_flags('server'), str(tmp_path))
  stateful.configure(exp)
  return exp


def _fake_evaluation(monkeypatch):
  """Stands in for tff_fl.engine.evaluation (packed evaluation, owned elsewhere); records the calls."""
  calls = []

  def client_accuracies(task, weights, client_ids=None):
    calls.append(('global', weights))
    return {c: 0.5 for c in (client_ids or task.client_ids)}

  def personal_accuracies(process, state, task, client_ids=None):
    calls.append(('personal', process.client_states(client_ids or task.client_ids)))
    return {c: 0.75 for c in (client_ids or task.client_ids)}

  def finetuned_accuracies(task, weights, client_optimizer, *, epochs, batch_size, seed):
    calls.append(('finetuned', (epochs, batch_size, seed)))
    return {c: 0.25 for c in task.client_ids}

  fake = types.SimpleNamespace(client_accuracies=client_accuracies, personal_accuracies=personal_accuracies,
                               finetuned_accuracies=finetuned_accuracies)
  monkeypatch.setattr(engine, 'evaluation', fake, raising=False)
  return calls


def _rounds(exp, n):
  process, state = exp.process, exp.process.initialize()
  for r in range(1, n + 1):
    output = process.next(state, engine.Cohort.full(r, exp.task.client_ids[:3]))
    state = output.state
    for hook in exp.hooks:
      hook.after_round(r, output, {})
  return state, output


def test_topk_ef_wraps_fedprox_with_bits_and_in_memory_store(tmp_path, monkeypatch):
  calls = _fake_evaluation(monkeypatch)
  with flagsaver.flagsaver(**SMALL, algorithm='fedprox', mu=0.1, compression='topk_ef(0.1)', finetune_epochs=2):
    exp = _experiment(tmp_path)
    process = exp.build_process()
    assert exp.algorithm == error_feedback.TopKErrorFeedback(fed_avg.FedAvg(0.1), 0.1)
    assert exp.algo_cfg.algorithm == 'fedprox'  # --algorithm is not rewritten.
    (hook,) = exp.hooks
    assert isinstance(hook.store, client_state.InMemoryStore) and process.store is hook.store
    assert hook.store.dim == process.state_dim == 650  # The residual: digits logreg has 64 x 10 + 10 weights.
    state, output = _rounds(exp, 2)
  d = 650
  assert output.metrics['aggregator']['bits_per_client'] == 65 * (32 + int(np.ceil(np.log2(d))))
  residual = process.client_state_structure(hook.store.get(exp.task.client_ids[0]))['residual']
  assert 0 < np.count_nonzero(residual) <= d - 65  # Digits' constant pixels have zero gradients (and residuals).
  hook.on_train_end(process, state, {})
  assert [k for k, _ in calls] == ['global', 'finetuned'] and calls[1][1] == (2, 20, 0)
  with open(tmp_path / 'clients.csv') as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['client_id', 'rounds_participated', 'last_loss', 'accuracy_global', 'accuracy_finetuned']
  assert [int(r['rounds_participated']) for r in rows] == [2, 2, 2, 0, 0, 0]
  assert hook.summary()['client_accuracy_finetuned_mean'] == 0.25


def test_ditto_on_disk_evaluates_personal_models(tmp_path, monkeypatch):
  calls = _fake_evaluation(monkeypatch)
  with flagsaver.flagsaver(**SMALL, algorithm='ditto', ditto_lambda=0.5, client_state_dir=str(tmp_path / 's')):
    exp = _experiment(tmp_path)
    process = exp.build_process()
    assert exp.algorithm == ditto.Ditto(0.5)
    (hook,) = exp.hooks
    assert isinstance(hook.store, client_state.DiskStore) and hook.store.dim == process.state_dim == 651
    state, _ = _rounds(exp, 1)
  hook.on_train_end(process, state, {})
  assert [k for k, _ in calls] == ['global', 'personal']
  personal_states = calls[1][1]
  assert personal_states.shape == (6, 651)
  initialized = [float(process.client_state_structure(v)['initialized']) for v in personal_states]
  assert initialized == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]  # The cohort trained personal models.
  with open(tmp_path / 'clients.csv') as f:
    assert f.readline().strip() == 'client_id,rounds_participated,last_loss,accuracy_global,accuracy_personal'


def test_stateless_algorithm_adds_no_hook_and_refuses_client_state_dir(tmp_path):
  with flagsaver.flagsaver(**SMALL, algorithm='fedavg'):
    exp = _experiment(tmp_path)
    assert builders.build_algorithm(exp) == fed_avg.FedAvg() and not exp.hooks
  with flagsaver.flagsaver(**SMALL, algorithm='fedavg', client_state_dir=str(tmp_path / 's')):
    exp = _experiment(tmp_path)
    with pytest.raises(ValueError, match=r'^--client_state_dir applies to algorithms with client state \(scaffold, '
                                         r'feddyn, fedper, ditto, .*got --algorithm=fedavg\.$'):
      exp.build_process()


def test_topk_ef_on_the_stock_engine_is_refused(tmp_path):
  with flagsaver.flagsaver(**SMALL, compression='topk_ef(0.1)'):
    exp = _experiment(tmp_path)
    exp.engine = 'tff'  # What --engine=tff sets (engine component).
    with pytest.raises(ValueError, match=r'^--compression=topk_ef\(0.1\) keeps a residual per client; --engine=tff'):
      exp.build_process()


@pytest.mark.parametrize('values,match', [
    (dict(algorithm='scaffold', client_optimizer='adam'),
     '^algorithm=scaffold with scaffold_correction=gradient runs plain SGD: it needs client_optimizer=sgd'),
    (dict(algorithm='scaffold', client_optimizer='momentum'), '^algorithm=scaffold with .* needs client_optimizer=sgd'),
    (dict(algorithm='scaffold', client_weight_decay=1e-4), '^algorithm=scaffold with .* and client_weight_decay=0'),
    (dict(algorithm='scaffold', client_optimizer='adam', scaffold_correction='after_step'),
     '^algorithm=scaffold needs client_optimizer=sgd or momentum'),
    (dict(algorithm='scaffold', scaffold_correction='before'), "^scaffold_correction must be one of gradient, "
                                                                "after_step; got 'before'"),
    (dict(algorithm='feddyn', feddyn_alpha=0.0), '^feddyn_alpha must be > 0'),
    (dict(algorithm='ditto', ditto_lambda=-1.0), '^ditto_lambda must be >= 0'),
])
def test_bad_algorithm_hyperparameters_are_one_line_library_errors(tmp_path, values, match):
  """The library's registry checks them and names its arguments (the binary rewords them as flags)."""
  with flagsaver.flagsaver(**SMALL, **values):
    with pytest.raises(ValueError, match=match):
      builders.build_algorithm(_experiment(tmp_path))


@pytest.mark.parametrize('values,match', [
    (dict(compression='topk_ef(1.5)'), r"--compression must be '' or topk_ef\(fraction\)"),
    (dict(finetune_epochs=-1), '--finetune_epochs must be >= 0'),
])
def test_bad_flags_are_one_line_errors(tmp_path, values, match):
  with flagsaver.flagsaver(**SMALL, **values):
    with pytest.raises(ValueError, match=match):
      _experiment(tmp_path)


def test_fedper_head_layers_from_the_model(tmp_path):
  with flagsaver.flagsaver(**dict(SMALL, model='2nn'), algorithm='fedper', fedper_head_layers=2):
    exp = _experiment(tmp_path)
    assert builders.build_algorithm(exp).head_size == 4  # The last two Dense layers: kernel + bias each.
  with flagsaver.flagsaver(**SMALL, algorithm='fedper'):  # logreg has one layer with weights.
    with pytest.raises(ValueError, match='^algorithm=fedper needs a model with >= 2 layers'):
      builders.build_algorithm(_experiment(tmp_path))
