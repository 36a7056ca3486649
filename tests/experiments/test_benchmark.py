"""The benchmark's algorithms extra: entries that have not landed are skipped with a note, failures are recorded,
rows carry the packed time next to stock TFF and the before value, and old results of scenarios not run are kept."""

import json

import pytest

from experiments import benchmark_algorithms as algorithms
from experiments import benchmark_setup


def test_load_reports_missing_module_and_class():
  assert algorithms.load('tff_fl.algorithms.fed_avg', 'FedAvg').__name__ == 'FedAvg'
  with pytest.raises(algorithms.Unavailable, match='tff_fl.no_such_module does not exist yet'):
    algorithms.load('tff_fl.no_such_module', 'X')
  with pytest.raises(algorithms.Unavailable, match='tff_fl.algorithms.fed_avg.NoSuchClass not defined yet'):
    algorithms.load('tff_fl.algorithms.fed_avg', 'NoSuchClass')


def test_rows_skip_unavailable_record_failures_and_fill_before(monkeypatch, tmp_path):
  def broken(context):
    raise ValueError('bad hyperparameter')

  entries = [('fedavg', algorithms.ENTRIES[0][1]), ('later', algorithms._definition('tff_fl.algorithms.later', 'L')),
             ('broken', broken)]
  monkeypatch.setattr(algorithms, 'ENTRIES', entries)
  monkeypatch.setattr(algorithms, 'evaluation', lambda task, init: (_ for _ in ()).throw(algorithms.Unavailable('x')))
  before = tmp_path / 'before.json'
  before.write_text(json.dumps({'commit': 'abc', 'stock_tff_fedavg_s_per_round': 4.0, 'eval_10000_clients_s': 165.0,
                                'algorithms': [{'algorithm': 'fedavg', 's_per_round': 5.0},
                                               {'algorithm': 'fedavg_fast', 's_per_round': 0.2}]}))
  out = algorithms.run(1, 0, before_path=str(before), stock=dict(s_per_round=100.0, cpu_s_per_round=90.0))
  rows = {r['algorithm']: r for r in out['algorithms']}
  assert list(rows) == ['fedavg', 'later', 'broken']
  fedavg = rows['fedavg']
  assert fedavg['scenario'] == 'cross_device_100x9' and 0 < fedavg['s_per_round'] < 100.0
  assert fedavg['stock_tff_fedavg_s_per_round'] == 100.0 and fedavg['before_s_per_round'] == 5.0
  assert fedavg['before_fast_engine_s_per_round'] == 0.2 and fedavg['finite_weights']
  assert fedavg['ratio_to_packed_fedavg'] == 1.0
  assert fedavg['speedup_vs_stock_tff_fedavg'] == pytest.approx(100.0 / fedavg['s_per_round'])
  assert rows['later']['s_per_round'] is None and rows['later']['note'].startswith('skipped: tff_fl.algorithms.later')
  assert rows['broken']['note'] == 'FAILED' and 'bad hyperparameter' in rows['broken']['error']
  assert out['evaluation']['eval_10000_clients_s'] is None and out['evaluation']['before_s'] == 165.0
  table = algorithms.markdown(out)
  assert '| fedavg | ' in table and '5.000 (fast engine 0.200)' in table and 'skipped: tff_fl.algorithms.later' in table


def test_scenario_rows_not_run_are_kept():
  old = [{'name': 'cross_device_100x9', 'v': 1}, {'name': 'cross_silo_10x900', 'v': 2}]
  merged = benchmark_setup.merge_scenarios(old, [{'name': 'cross_device_100x9', 'v': 3}])
  assert merged == [{'name': 'cross_device_100x9', 'v': 3}, {'name': 'cross_silo_10x900', 'v': 2}]
