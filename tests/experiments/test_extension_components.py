"""Binary components that add round extensions (attacks in `aggregation`, `drift`, `preprocessing`): flags parsed as
the binary parses them; what each adds to the experiment; one-line errors; attacks follow the reporting clients of
any participation and the hook maps Krum's picks back to them."""

import types

import numpy as np
import pytest
from absl import flags
import tensorflow_federated as tff

from experiments import experiment
from experiments import train  # pylint: disable=unused-import  (defines the binary's flags and components)
from experiments.components import aggregation
from experiments.components import drift as drift_component
from experiments.components import preprocessing as preprocessing_component
from experiments.components import regimes as regimes_component
from tff_fl import tasks
from tff_fl.algorithms import attacks
from tff_fl.algorithms import builders
from tff_fl.algorithms import drift
from tff_fl.algorithms import preprocessing
from tff_fl.simulation import drift_hook
from tff_fl.simulation import training_loop

FLAGS = flags.FLAGS



def _exp(task='digits', algorithm='fedavg'):
  cfg = tasks.TaskConfig(task=task, model='logreg', num_clients=12, seed=0)
  sgd = tff.learning.optimizers.build_sgdm(0.1)
  algo_cfg = types.SimpleNamespace(algorithm=algorithm, client_weighting='num_examples')  # Any registered name.
  return experiment.Experiment(task=tasks.build_task(cfg), task_cfg=cfg, algo_cfg=algo_cfg,
                               loop_cfg=training_loop.LoopConfig(clients_per_round=10, seed=3),
                               client_optimizer=sgd, server_optimizer=sgd, exp_dir='')


@pytest.mark.parametrize('algorithm', ['fedavg', 'scaffold', 'ditto', 'fedper'])
def test_attack_is_an_extension_for_any_algorithm(parse, algorithm):
  parse('--attack=label_flip', '--byzantine_fraction=0.2')
  exp = _exp(algorithm=algorithm)
  aggregation.configure(exp)
  (attack,) = exp.extensions
  assert isinstance(attack, attacks.ByzantineAttack) and attack.attack == 'label_flip' and attack.num_classes == 10
  (hook,) = exp.hooks
  assert isinstance(hook, aggregation.AttackHook) and hook.attack is attack


def test_attacks_follow_the_reporting_clients_and_krum_picks(parse):
  parse('--attack=sign_flip', '--byzantine_fraction=0.5', '--dropout_rate=0.5')
  exp = _exp()
  regimes_component.configure(exp)
  aggregation.configure(exp)
  attack = exp.extensions[0]
  hook = next(h for h in exp.hooks if isinstance(h, aggregation.AttackHook))
  sampled = exp.task.client_ids[:10]
  for r in range(1, 4):
    cohort = exp.participation(r, sampled)  # Dropouts: fewer report than were sampled.
    assert len(cohort.client_ids) < len(sampled)
    flags_ = attack.fields(r, list(cohort.client_ids), list(cohort.sampled))['malicious']  # As the engine packs.
    bad = attacks.choose_byzantine(sampled, 0.5, exp.task_cfg.seed, r)
    assert list(flags_) == [int(c in bad) for c in cohort.client_ids]
    row = {'aggregator/selected_indices/0': 0, 'aggregator/selected_indices/1': len(cohort.client_ids) - 1}
    hook.after_round(r, None, row)
    assert row['attack/malicious'] == sum(c in bad for c in cohort.client_ids)
    assert row['attack/malicious_selected'] == int(flags_[0]) + int(flags_[-1])
  hook.after_round(9, None, row := {})  # Not the round the extension packed: no columns.
  assert not row


@pytest.mark.parametrize('args, match', [
    (['--attack=poison', '--byzantine_fraction=0.2'], "^--attack must be one of none, sign_flip"),
    (['--attack=sign_flip'], '^--attack and --byzantine_fraction go together'),
    (['--attack=sign_flip', '--byzantine_fraction=1.0'], r'^--byzantine_fraction must be in \[0, 1\); got 1.0.$'),
    (['--attack=gaussian_noise', '--byzantine_fraction=0.1', '--attack_noise_std=-1'],
     '^--attack_noise_std must be >= 0; got -1.0.$'),
])
def test_bad_attack_flags(parse, args, match):
  parse(*args)
  with pytest.raises(ValueError, match=match):
    aggregation.configure(_exp())


def test_drift_adds_its_extension_and_hook(parse):
  parse('--drift_metrics', '--drift_warning_threshold=0.3')
  exp = _exp(algorithm='scaffold')
  drift_component.configure(exp)
  assert [type(e) for e in exp.extensions] == [drift.DriftMeasurements]
  assert [type(h) for h in exp.hooks] == [drift_hook.DriftHook] and exp.hooks[0].threshold == 0.3
  parse('--drift_metrics', '--drift_warning_threshold=-1')
  with pytest.raises(ValueError, match='^--drift_warning_threshold must be >= 0'):
    drift_component.configure(_exp())
  parse()
  exp = _exp()
  drift_component.configure(exp)
  assert not exp.extensions and not exp.hooks


def test_preprocessing_adds_its_extension_and_normalised_eval_arrays(parse):
  parse('--client_preprocess=normalize(client),take(3)', '--augment=flip')
  exp = _exp()
  preprocessing_component.configure(exp)
  (ext,) = exp.extensions
  assert isinstance(ext, preprocessing.ClientPreprocessing) and ext.batch_size == 10 and ext.seed == 3
  cid = exp.task.client_ids[0]
  x_train = exp.task.data.train[cid][0].astype(np.float64)
  np.testing.assert_allclose(exp.eval_arrays[cid][0], (exp.task.data.test[cid][0] - x_train.mean()) / x_train.std(),
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r'^--client_preprocess=normalize\(client\),take\(3\) and '
                                       r'--client_preprocess=normalize\(client\),take\(3\) both change the evaluation data'):
    preprocessing_component.configure(exp)
  parse('--client_preprocess=take(3)')
  exp = _exp()
  preprocessing_component.configure(exp)
  assert len(exp.extensions) == 1 and exp.eval_arrays is None  # Evaluation untouched without normalize.
  parse()
  exp = _exp()
  preprocessing_component.configure(exp)
  assert not exp.extensions


@pytest.mark.parametrize('args, match', [
    (['--augment=flip'], r'^--augment needs image examples \[H, W, C\]; this task has x of shape \(60,\).$'),
    (['--client_preprocess=take(0)'], '^--client_preprocess: take needs an integer >= 1'),
])
def test_bad_preprocessing_flags(parse, args, match):
  parse(*args)
  with pytest.raises(ValueError, match=match):
    preprocessing_component.configure(_exp(task='synthetic'))
