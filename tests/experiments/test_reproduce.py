"""Reproduction runner: McMahan's rounds-to-target method against hand-computed numbers, and a 2-round toy suite
run through the binary's flag parsing and training loop, its table checked against its own metrics.csv."""

import csv
import os

import numpy as np
import pytest
from absl import flags

from experiments import reproduce
from experiments import reproduce_report


def test_rounds_to_target_hand_computed():
  rounds, acc = [1, 2, 3, 4, 5], [0.5, 0.8, 0.7, 0.95, 0.9]
  # Running max: 0.5, 0.8, 0.8, 0.95, 0.95 -> crosses 0.9 between round 3 (0.8) and 4 (0.95): 3 + 0.1 / 0.15.
  assert reproduce_report.rounds_to_target(rounds, acc, 0.9) == pytest.approx(3 + 0.1 / 0.15)
  # A dip below the target after reaching it does not matter; uneven spacing: 10 + (0.6 - 0.4) / 0.4 * 10 = 15.
  assert reproduce_report.rounds_to_target([5, 10, 20, 25], [0.3, 0.4, 0.8, 0.1], 0.6) == pytest.approx(15.0)
  assert reproduce_report.rounds_to_target(rounds, acc, 0.96) is None
  assert reproduce_report.rounds_to_target(rounds, acc, 0.5) == 1.0
  with pytest.raises(ValueError, match='equal length'):
    reproduce_report.rounds_to_target([1, 2], [0.1], 0.5)


def test_mean_spread_and_tail_std():
  assert reproduce_report.mean_spread([1.0, 3.0, None]) == '2.000 ± 1.000 (n=2)'
  rows = [{'round': r, 'a': v} for r, v in zip(range(1, 7), [0.0, 0.0, 0.0, 1.0, 3.0, 5.0])] + [{'round': 7}]
  assert reproduce_report.tail_std(rows, 'a') == pytest.approx(np.std([1.0, 3.0, 5.0]))


def _toy_suite(tmp_path):
  flagfile = tmp_path / 'toy.flags'
  flagfile.write_text('\n'.join([
      '--task=digits', '--model=logreg', '--num_clients=5', '--partition=iid', '--clients_per_round=2',
      '--client_learning_rate=0.5', '--client_batch_size=32', '--total_rounds=2', '--rounds_per_eval=1',
      '--central_eval=test', '--experiment_name=ignored']))
  run = reproduce.Run('toy', str(flagfile), 'reached', overrides=(('client_learning_rate', 0.1),), target=0.0,
                      paper='1 round', paper_rounds=1)
  return reproduce.Suite('toy', 'Toy suite', (run,), (0,), 'rounds_to_target', 'notes')


def test_toy_suite_runs_through_the_binary(tmp_path):
  suite = _toy_suite(tmp_path)
  work, out = str(tmp_path / 'work'), str(tmp_path / 'out')
  try:
    path = reproduce.run_suite(suite, work, out, log=lambda line: None)
  finally:
    flags.FLAGS.unparse_flags()
  with open(os.path.join(work, 'toy_seed0', 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [r['round'] for r in rows] == ['1']  # Target 0 is reached after round 1 of 2: the run stops there.
  # Central evaluation (Keras, all clients' test examples) agrees with the loop's federated per-client evaluation.
  assert float(rows[0]['central_test_accuracy']) == pytest.approx(float(rows[0]['eval_accuracy']), abs=1e-6)
  assert float(rows[0]['central_test_loss']) == pytest.approx(float(rows[0]['eval_loss']), rel=1e-4)
  with open(os.path.join(work, 'toy_seed0', 'hparams.json')) as f:
    assert '"client_learning_rate": 0.1' in f.read()  # The override reached the binary's flags.
  table = [line.split(' | ') for line in open(path).read().splitlines() if line.startswith('| reached')]
  assert table[0][1:4] == ['1 round', '1.0', '1.00x'] and table[0][6] == '1'
  assert 'client lr 0.1' in table[0][4] and 'digits/logreg' in table[0][4]
  assert os.path.getsize(os.path.join(out, 'toy_accuracy.png')) > 0
  assert os.path.exists(os.path.join(out, reproduce.REPORT_NAME))


def test_rounds_to_target_section_not_reached(tmp_path):
  run = reproduce.Run('r', 'unused.flags', 'cfg', target=0.9, paper='3 rounds', paper_rounds=3)
  suite = reproduce.Suite('s', 'S', (run,), (0, 1), 'rounds_to_target')
  rows = [{'round': 1, 'central_test_accuracy': 0.5}, {'round': 2, 'central_test_accuracy': 0.95}]
  results = [reproduce.RunResult(run, 0, rows, 2, 60.0, 'settings'),
             reproduce.RunResult(run, 1, rows[:1] + [{'round': 2, 'central_test_accuracy': 0.7}], 2, 30.0, 'x')]
  lines = [l.split(' | ') for l in reproduce_report.rounds_to_target_section(suite, results, str(tmp_path))
           .splitlines() if l.startswith('| cfg')]
  assert lines[0][2:4] == [f'{1 + 0.4 / 0.45:.1f}', f'{(1 + 0.4 / 0.45) / 3:.2f}x'] and lines[0][7] == '1.0 min |'
  assert lines[1][2:4] == ['not reached (best 0.7000)', '-']


def test_fedprox_section_means_and_orderings(tmp_path):
  avg = reproduce.Run('a', 'x.flags', 'FedAvg', group='Synthetic(1,1)', stragglers=0.9)
  prox = reproduce.Run('p', 'x.flags', 'FedProx mu=1', group='Synthetic(1,1)', stragglers=0.9)
  suite = reproduce.Suite('fp', 'FP', (avg, prox), (0, 1), 'fedprox')
  rows = lambda loss, accs: [{'round': r, 'central_train_loss': loss + 1.0 / r, 'eval_accuracy': a}
                             for r, a in zip((1, 2, 3, 4), accs)]
  results = [reproduce.RunResult(avg, 0, rows(1.0, [0.1, 0.5, 0.2, 0.6]), 4, 60.0, ''),
             reproduce.RunResult(avg, 1, rows(2.0, [0.1, 0.5, 0.2, 0.4]), 4, 60.0, ''),
             reproduce.RunResult(prox, 0, rows(0.5, [0.1, 0.5, 0.7, 0.7]), 4, 60.0, '')]
  text = reproduce_report.fedprox_section(suite, results, str(tmp_path))
  (line,) = [l.split(' | ') for l in text.splitlines() if l.startswith('| Synthetic')]
  # Train loss, mean of rounds 3-4 (last half): loss + (1/3 + 1/4) / 2 = loss + 7/24 -> FedAvg seeds 1.292 and
  # 2.292 -> 1.792 ± 0.5; FedProx 0.792. Final accuracy 0.5 ± 0.1 vs 0.7.
  assert line[1:6] == ['90%', '1.792 ± 0.500 (n=2)', '0.792', '0.500 ± 0.100 (n=2)', '0.700']
  # Instability: std of the last half of the accuracy curve: FedAvg std(0.2, 0.6)=0.2, std(0.2, 0.4)=0.1; FedProx 0.
  assert line[6:8] == ['0.150 ± 0.050 (n=2)', '0.000']
  # Paired seeds (seed 0 only has both): accuracy 0.7 > 0.6 and instability 0.0 < 0.2.
  assert line[8:13] == ['yes', 'yes', 'higher acc: 1/1 seeds; more stable: 1/1 seeds', '4', '0']
  assert line[13] == '3.0 min |'
  assert (tmp_path / 'fp_train_loss.png').exists() and (tmp_path / 'fp_test_accuracy.png').exists()


def test_fedprox_claims_per_cell():
  a, p = dict(loss=1.0, acc=0.5, instab=0.1), dict(loss=0.8, acc=0.6, instab=0.2)
  verdicts = lambda iid, level: [(name, test(a, p)) for name, test in reproduce_report.fedprox_claims(iid, level)]
  assert verdicts(False, 0.0) == [('mu=1 lower loss', True)]
  assert verdicts(True, 0.0) == [('mu=1 slows IID (higher loss)', False)]
  assert verdicts(False, 0.5) == []
  assert verdicts(True, 0.9) == [('higher acc', True), ('more stable', False)]


@pytest.mark.parametrize('name', sorted(reproduce.SUITES))
def test_every_suite_run_parses_as_the_binary_would(name, tmp_path):
  """Every flagfile exists and every override is a flag of the binary with a valid value (no training)."""
  suite = reproduce.SUITES[name]()
  assert suite.runs and len({r.name for r in suite.runs}) == len(suite.runs)
  try:
    for run in suite.runs:
      reproduce.parse_run_flags(run, 0, str(tmp_path))
      for key, value in run.overrides:
        assert str(flags.FLAGS[key].value) == str(value), (run.name, key)
  finally:
    flags.FLAGS.unparse_flags()


def test_final_accuracy_section_says_when_each_value_was_measured(tmp_path):
  run = reproduce.Run('s', 'x.flags', 'cfg', metric='central_test_accuracy', paper='56.9%')
  suite = reproduce.Suite('sh', 'SH', (run,), (0,), 'final_accuracy')
  rows = [{'round': 8, 'central_test_accuracy': 0.28, 'eval_accuracy': 0.45},
          {'round': 10, 'central_test_accuracy': 0.30}, {'round': 11}]
  text = reproduce_report.final_accuracy_section(suite, [reproduce.RunResult(run, 0, rows, 11, 60.0, 'x')],
                                                 str(tmp_path))
  (line,) = [l.split(' | ') for l in text.splitlines() if l.startswith('| cfg')]
  assert line[2:4] == ['0.3000 (round 10)', '0.4500 (round 8)'] and line[6] == '11'


def test_niid_bench_suite_runs_parse_as_the_paper_setting(tmp_path):
  suite = reproduce.SUITES['niid_bench']()
  assert len(suite.runs) == 2 * 7 * 4 and suite.seeds == (0, 1, 2)
  first = [r.name for r in suite.runs[:8]]
  assert first[:4] == [f'niid_bench_mnist_dir05_{a}' for a in ('fedavg', 'fedprox', 'scaffold', 'fednova')]
  assert first[4:] == [f'niid_bench_fashion_mnist_c2_{a}' for a in ('fedavg', 'fedprox', 'scaffold', 'fednova')]
  FLAGS = flags.FLAGS
  try:
    for run in list(suite.runs[:8]) + [r for r in suite.runs if 'fashion_mnist_noise01_scaffold' in r.name]:
      reproduce.parse_run_flags(run, 0, str(tmp_path))
      assert (FLAGS.num_clients, FLAGS.clients_per_round, FLAGS.client_epochs_per_round, FLAGS.client_batch_size,
              FLAGS.total_rounds, FLAGS.model) == (10, 10, 10, 64, 50, 'simple_cnn')
      assert (FLAGS.client_optimizer, FLAGS.client_learning_rate, FLAGS.client_momentum,
              FLAGS.client_weight_decay) == ('momentum', 0.01, 0.9, 1e-5)
      assert FLAGS.client_weighting == 'num_examples' and FLAGS.server_learning_rate == 1.0
    assert (FLAGS.partition, FLAGS.feature_noise, FLAGS.scaffold_correction) == ('iid', 0.1, 'after_step')
  finally:
    FLAGS.unparse_flags()


def test_niid_bench_section_best_final_and_partial(tmp_path):
  suite = reproduce.SUITES['niid_bench']()
  runs = {r.name: r for r in suite.runs}
  rows = lambda accs: [{'round': i + 1, 'central_test_accuracy': a} for i, a in enumerate(accs)]
  results = [reproduce.RunResult(runs['niid_bench_mnist_dir05_fedavg'], 0, rows([0.5, 0.9, 0.8]), 3, 60.0, ''),
             reproduce.RunResult(runs['niid_bench_mnist_dir05_fedavg'], 1, rows([0.7, 0.6, 0.7]), 3, 60.0, ''),
             reproduce.RunResult(runs['niid_bench_mnist_dir05_scaffold'], 0, rows([0.1] * 50), 50, 60.0, '')]
  text = reproduce_report.niid_bench_section(suite, results, str(tmp_path))
  line = next(l for l in text.splitlines() if l.startswith('| MNIST Dir(0.5)'))
  cells = line.split(' | ')
  assert cells[1] == '0.800 ± 0.100 (n=2) / 0.750 ± 0.050 (n=2) (partial, rounds 3,3)'  # best 0.9, 0.7; final 0.8, 0.7
  assert cells[2] == '-' and cells[3] == '0.100 / 0.100 (rounds 50)'
  assert '| niid_bench_mnist_dir05_scaffold | 0 | 50 | complete |' in text
  assert os.path.exists(tmp_path / 'niid_bench_accuracy.png')
