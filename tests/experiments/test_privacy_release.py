"""Privacy release audit (`experiments/components/privacy_release.py`): under --dp / --sample_dp a run writes only
values the DP mechanism covers (or that are not derived from client data, or pooled held-out evaluation), lists
them in summary.json's privacy.released, and refuses flags that would compute client data outside the mechanism;
without DP nothing changes.

The expected column sets are written out here from the DP definitions (what the DP aggregator / DP-SGD outputs and
what is summed outside it), not read back from the declared list.
"""

import glob
import os
import types

import pytest
import tensorflow as tf

from experiments.components import privacy_release
from tff_fl.algorithms import error_feedback
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import feddyn
from tff_fl.algorithms import scaffold
from tff_fl.simulation import outputs

import train_binary  # tests/train_binary.py: the binary in this process

SMALL = ['--task=digits', '--model=logreg', '--num_clients=10', '--clients_per_round=5', '--client_batch_size=20',
         '--total_rounds=1']
STATEFUL_DROPOUT = ['--algorithm=fedper', '--model=2nn', '--dropout_rate=0.2']  # clients.csv (per-client), regime/* (simulated)
NON_PRIVATE = {'train_loss', 'train_accuracy', 'client_work/train/loss', 'client_work/train/num_examples',
               'client_work/train/num_batches', 'client_work/train/sparse_categorical_accuracy',
               'client_accuracy_min', 'client_accuracy_p10', 'client_accuracy_p50', 'client_accuracy_p90'}
PUBLIC_SIMULATION = {'round', 'round_seconds', 'clients', 'regime/sampled', 'regime/dropped', 'regime/stragglers',
                     'regime/partial', 'regime/reported'}
POOLED_EVAL = {'eval_loss', 'eval_accuracy', 'eval_clients', 'client_accuracy_mean'}


def _run(out, name, *flags):
  proc = train_binary.run(*SMALL, f'--root_output_dir={out}', f'--experiment_name={name}', *flags)
  assert proc.returncode == 0, proc.stderr[-3000:]
  exp = os.path.join(out, name)
  rows, summary = train_binary.read_outputs(exp)
  tags = set()
  for path in glob.glob(os.path.join(exp, 'tb', 'events*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  return types.SimpleNamespace(proc=proc, exp=exp, columns=set(rows[0]), summary=summary, tb=tags)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  out = tmp_path_factory.mktemp('release')
  return types.SimpleNamespace(
      dp=_run(out, 'dp', '--dp=fixed', '--noise_multiplier=1.0', *STATEFUL_DROPOUT),
      plain=_run(out, 'plain', *STATEFUL_DROPOUT),
      sample_dp=_run(out, 'sample_dp', '--sample_dp', '--aggregator=krum(1)'))


def test_client_dp_run_writes_only_covered_values(runs):
  r = runs.dp
  assert r.columns == PUBLIC_SIMULATION | POOLED_EVAL | {'finalizer/update_non_finite', 'epsilon'}
  assert r.tb == r.columns - {'round'}  # TensorBoard gets the same scalars as metrics.csv.
  assert not os.path.exists(os.path.join(r.exp, 'clients.csv'))  # Per-client participation, loss, accuracies.
  assert not NON_PRIVATE & set(r.summary) and 'per_client_accuracy' not in r.summary
  assert 'clients_participated' not in r.summary
  assert 'train_loss' not in r.proc.stdout and 'per-client' not in r.proc.stdout  # The log is a release too.


def test_summary_lists_what_was_released_and_what_covers_it(runs):
  released = runs.dp.summary['privacy']['released']
  assert released['mechanisms'] == ['client_dp']
  assert released['covered_by']['accounted'].startswith('epsilon (client level, delta=1e-05')
  assert released['released']['finalizer/update_non_finite'] == 'accounted'
  assert released['released']['eval_accuracy'] == 'evaluation'
  assert released['released']['regime/dropped'] == 'public' and released['released']['epsilon'] == 'public'
  assert set(released['released']) >= runs.dp.columns
  assert set(released['suppressed']) == NON_PRIVATE | {'per_client_accuracy', 'clients.csv'}
  assert all('no release rule' not in why for why in released['suppressed'].values())  # The list is complete.
  assert any(line.startswith('drift/*') for line in released['refused'])
  assert set(runs.dp.summary) - {'privacy'} <= set(released['released'])


def test_without_dp_nothing_is_withheld(runs):
  r = runs.plain
  assert r.columns == (PUBLIC_SIMULATION | POOLED_EVAL | NON_PRIVATE | {'finalizer/update_non_finite'})
  assert r.tb == r.columns - {'round'}
  assert os.path.exists(os.path.join(r.exp, 'clients.csv'))
  assert 'per_client_accuracy' in r.summary and 'privacy' not in r.summary
  assert 'train_loss' in r.proc.stdout and 'per-client p10' in r.proc.stdout


def test_sample_dp_releases_post_processing_of_dp_sgd_updates(runs):
  """Example level: Krum's choice among DP-SGD updates is post-processing; dataset sizes are public under the
  replace-one adjacency the example-level accountant uses; training loss is still outside DP-SGD."""
  r = runs.sample_dp
  released = r.summary['privacy']['released']
  assert released['mechanisms'] == ['sample_dp']
  assert 'aggregator/selected_indices/0' in r.columns and 'example_epsilon' in r.columns
  assert released['released']['aggregator/selected_indices/0'] == 'accounted'
  assert {'client_work/train/num_examples', 'client_work/train/num_batches'} <= r.columns
  assert not {'train_loss', 'train_accuracy', 'client_work/train/loss', 'client_accuracy_p10'} & r.columns


REFUSED = {
    'drift_dp': (['--dp=fixed', '--drift_metrics'], '--drift_metrics', '--dp=fixed'),
    'drift_sample_dp': (['--sample_dp', '--drift_metrics'], '--drift_metrics', '--sample_dp'),
    'finetune': (['--dp=tree', '--client_sampling=cyclic', '--finetune_epochs=1'], '--finetune_epochs=1',
                 '--dp=tree'),
    'central_train': (['--dp=fixed', '--central_eval=test,train'], '--central_eval=test,train', '--dp=fixed'),
    'cluster_labels': (['--dp=fixed', '--hierarchical', '--cluster_by=labels'], '--cluster_by=labels', '--dp=fixed'),
    'normalize_client': (['--sample_dp', '--client_preprocess=normalize(client)'],
                         '--client_preprocess=normalize(client)', '--sample_dp'),
    'scaffold': (['--dp=fixed', '--algorithm=scaffold'], '--algorithm=scaffold', '--dp=fixed'),
    'ditto': (['--sample_dp', '--algorithm=ditto'], '--algorithm=ditto', '--sample_dp'),
}


@pytest.fixture(scope='module')
def refused_runs(tmp_path_factory):
  out = tmp_path_factory.mktemp('refused')
  return {name: train_binary.run(*SMALL, f'--root_output_dir={out}', f'--experiment_name={name}', *flags)
          for name, (flags, _, _) in REFUSED.items()}, out


@pytest.mark.parametrize('name', list(REFUSED))
def test_refused_pairs_are_one_line_errors_naming_both_flags(refused_runs, name):
  results, out = refused_runs
  code, _, stderr = results[name]
  _, flag, dp_flag = REFUSED[name]
  assert code == 2, stderr[-2000:]
  line = stderr.strip()
  assert line.count('\n') == 0 and line.startswith(f'error: {flag} cannot be combined with {dp_flag}: '), line
  assert not os.path.exists(out / name / 'metrics.csv')


def test_uploads_outside_the_aggregator_are_found_through_wrappers():
  plain, scaf, dyn = fed_avg.FedAvg(), scaffold.Scaffold(0.1, 10), feddyn.FedDyn(0.1, 10)
  assert not privacy_release.uploads_outside_aggregator(plain)
  assert privacy_release.uploads_outside_aggregator(scaf) and privacy_release.uploads_outside_aggregator(dyn)
  assert privacy_release.uploads_outside_aggregator(error_feedback.TopKErrorFeedback(scaf, 0.5))
  assert not privacy_release.uploads_outside_aggregator(error_feedback.TopKErrorFeedback(plain, 0.5))


def _flags(**kw):
  return types.SimpleNamespace(**{'dp': 'none', 'sample_dp': False, 'client_sampling': 'uniform', **kw})


def test_poisson_cohort_sizes_are_withheld_and_both_claims_take_the_stricter_status():
  text = {'client_dp': 'epsilon', 'sample_dp': 'example_epsilon'}
  assert privacy_release.policy(_flags(), text) is None
  uniform = privacy_release.policy(_flags(dp='fixed'), text)
  poisson = privacy_release.policy(_flags(dp='fixed', client_sampling='poisson'), text)
  assert uniform.allows('clients') and uniform.allows('regime/dropped')
  assert not poisson.allows('clients') and not poisson.allows('regime/reported') and not poisson.allows('comm/x')
  sample = privacy_release.policy(_flags(sample_dp=True), text)
  both = privacy_release.policy(_flags(dp='fixed', sample_dp=True), text)
  assert sample.allows('client_work/train/num_examples') and not both.allows('client_work/train/num_examples')
  assert not both.allows('a_metric_nobody_declared')  # Default deny.
  assert both.suppressed()['a_metric_nobody_declared'].endswith('(default deny)')


def test_release_policy_first_match_wins_and_filters_in_order():
  policy = outputs.ReleasePolicy([('a/x', 'suppressed-under-dp', 'why'), ('a/*', 'accounted', 'dp'),
                                  ('b', 'public', 'config')])
  assert list(policy.filter({'b': 1, 'a/x': 2, 'a/y': 3, 'c': 4})) == ['b', 'a/y']
  assert policy.released() == {'b': 'public', 'a/y': 'accounted'}
  assert set(policy.suppressed()) == {'a/x', 'c'}


def test_rows_restored_on_resume_pass_the_policy(tmp_path):
  """A DP run resumed from rows written before its policy existed does not re-release them."""
  with open(tmp_path / 'metrics.csv', 'w') as f:
    f.write('round,train_loss,epsilon\n1,0.5,1.0\n2,0.4,1.5\n')
  out = outputs.ExperimentOutputs(str(tmp_path), release=privacy_release.policy(_flags(dp='fixed'), {
      'client_dp': 'epsilon'}))
  out.load_rows(1)
  assert out.rows == [{'round': 1, 'epsilon': 1.0}]
