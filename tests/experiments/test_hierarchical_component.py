"""The hierarchical component: --hierarchical makes the experiment's algorithm hierarchical; bad combinations are
one-line errors naming flags before training (a robust --aggregator a cluster's share of the cohort is too small
for, hierarchy flags without --hierarchical, --engine=tff); a short run writes the per-cluster columns."""

import csv

from absl import flags
import numpy as np
import pytest
import tensorflow_federated as tff

from experiments import experiment
from experiments.components import hierarchical as component
from tff_fl import tasks
from tff_fl.algorithms import builders
from tff_fl.algorithms import scaffold
from tff_fl.simulation import training_loop

FLAGS = flags.FLAGS
component.define_flags()
if 'aggregator' not in FLAGS:  # The aggregation component's flag, read by the edge-aggregator check.
  flags.DEFINE_string('aggregator', 'mean', 'model update aggregator spec')



def _experiment(tmp_path, num_clients=8, clients_per_round=4, rounds=2):
  task = tasks.build_task(tasks.TaskConfig(num_clients=num_clients, model='logreg', partition='dirichlet', seed=1))
  loop = training_loop.LoopConfig(total_rounds=rounds, clients_per_round=clients_per_round, client_batch_size=20,
                                  rounds_per_eval=rounds, rounds_per_checkpoint=rounds)
  return experiment.Experiment(task, None, builders.AlgorithmConfig(), loop, tff.learning.optimizers.build_sgdm(0.1),
                               tff.learning.optimizers.build_sgdm(1.0), str(tmp_path))


def _one_line(error):
  text = str(error.value)
  assert '\n' not in text, text
  return text


@pytest.mark.parametrize('spec, sizes, cohort, expected', [
    ('trimmed_mean(0.34)', [4, 8], 6, '--aggregator=trimmed_mean(0.34) needs >= 3 reporting clients per edge round, '
     'but with --hierarchical --num_clusters=2 (cluster sizes 4, 8) a cluster may get 0 of the sampled clients; use '
     '--clients_per_round >= 11, or a non-robust --aggregator.'),
    ('clip(1.0)>krum(1)', [5, 5], 9, 'needs >= 5 reporting clients per edge round'),
    ('median', [1, 11], 12, None),  # A median of one client is that client.
    ('trimmed_mean(0.34)', [2, 10], 12, 'use fewer --num_clusters (the smallest cluster has 2 clients)'),
    ('trimmed_mean(0.34)', [4, 8], 12, None),  # Full participation: every cluster brings all its clients.
    ('trimmed_mean(0.34)', [4, 8], 11, None),
    ('mean', [1, 1, 10], 3, None),
    (None, [1, 11], 2, None),
])
def test_edge_aggregator_check(spec, sizes, cohort, expected):
  if expected is None:
    component.check_edge_aggregator(spec, np.array(sizes), cohort)
    return
  with pytest.raises(ValueError) as e:
    component.check_edge_aggregator(spec, np.array(sizes), cohort)
  assert expected in _one_line(e)


@pytest.mark.parametrize('argv, expected', [
    (['--num_clusters=3', '--global_every=2'], '--num_clusters, --global_every apply only with --hierarchical.'),
    (['--hierarchical', '--global_every=0'], '--global_every must be >= 1; got 0.'),
    (['--hierarchical', '--cluster_mixing=1'], '--cluster_mixing must be in [0, 1); got 1.0.'),
    (['--hierarchical', '--cluster_weighting=1,2,3'], "--cluster_weighting must be 'examples', 'uniform' or 2"),
    (['--hierarchical', '--cluster_by=natural'], "--cluster_by=natural needs client ids '<group>/<client>'"),
    (['--hierarchical', '--num_clusters=9'], '--num_clusters must be between 1 and the number of clients (8)'),
    (['--hierarchical', '--aggregator=trimmed_mean(0.34)'], 'a cluster may get 0 of the sampled clients'),
])
def test_bad_flags_are_one_line_errors_before_training(tmp_path, parse, argv, expected):
  parse(*argv)
  with pytest.raises(ValueError) as e:
    exp = _experiment(tmp_path)
    component.configure(exp)
    for check in exp.build_checks:  # Checks on parts of other components run once all are configured.
      check(exp)
  assert expected in _one_line(e)


def test_without_hierarchical_nothing_changes(tmp_path, parse):
  parse()
  exp = _experiment(tmp_path)
  component.configure(exp)
  assert exp.process_factory is None and not exp.hooks


@pytest.mark.parametrize('argv, warned', [((), True), (('--global_every=2',), False), (('--cluster_mixing=0.5',), False),
                                           (('--cluster_weighting=uniform',), False)])
def test_settings_that_make_the_hierarchy_fedavg_say_so(tmp_path, parse, monkeypatch, argv, warned):
  said = []
  monkeypatch.setattr(component.logging, 'warning', lambda msg, *args: said.append(msg % args))
  parse('--hierarchical', *argv)
  component.configure(_experiment(tmp_path))
  assert any('is FedAvg itself' in s for s in said) == warned


def test_engine_tff_is_refused(tmp_path, parse):
  parse('--hierarchical')
  exp = _experiment(tmp_path)
  component.configure(exp)
  exp.engine = 'tff'
  with pytest.raises(ValueError, match=r'^--hierarchical runs on the packed engine; got --engine=tff\.$'):
    exp.build_process()


def test_hierarchical_scaffold_run_writes_cluster_columns(tmp_path, parse, monkeypatch):
  """Any registered definition becomes hierarchical: SCAFFOLD (server extra + client state) at every edge."""
  monkeypatch.setitem(builders.ALGORITHMS._entries, 'scaffold_under_test',  # pylint: disable=protected-access
                      lambda exp: scaffold.Scaffold(0.1, len(exp.task.client_ids)))
  parse('--hierarchical', '--num_clusters=2', '--global_every=2', '--cluster_mixing=0.5')
  exp = _experiment(tmp_path)
  exp.algo_cfg.algorithm = 'scaffold_under_test'
  component.configure(exp)
  process = exp.build_process()
  assert isinstance(exp.algorithm, scaffold.Scaffold) and process.num_clusters == 2 and process.stateful
  summary = training_loop.run_training(process, exp.task, exp.loop_cfg, exp.exp_dir, {'run': 'test'},
                                       hooks=exp.hooks, log=lambda _: None)
  with open(tmp_path / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['hierarchy/global_step'] for r in rows] == ['0', '1']
  assert [int(r['comm/long_haul/bytes']) > 0 for r in rows] == [False, True]
  assert sum(int(rows[0][f'cluster/{k}/clients']) for k in range(2)) == 4
  assert 0.0 <= float(rows[-1]['cluster/0/accuracy']) <= 1.0 and 'cluster/1/global_accuracy' in rows[-1]
  assert summary['rounds_completed'] == 2 and summary['long_haul_bytes_total'] == int(rows[-1]['comm/long_haul/bytes'])
  # SCAFFOLD's down/up-link also carries c and dc_i: twice the FedAvg bytes per client.
  model_bytes = 4 * sum(np.size(w) for w in exp.task.initial_weights(0).trainable)
  assert int(rows[0]['comm/client_edge/bytes_down']) == 4 * 2 * model_bytes
  sampled = [c for c in exp.task.client_ids if process.store.get_many([c])[0] is not None]
  assert 4 <= len(sampled) <= 8  # Every reporter's control variate is stored (one store for both clusters).
