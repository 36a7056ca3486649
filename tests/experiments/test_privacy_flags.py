"""The binary's privacy flags end to end: epsilon every round (vs dp-accounting), budget stop, refused mismatches.

References are computed here, independently of tff_fl: dp-accounting's RDP accountant composing the sampling event
that the flags describe, and tensorflow-privacy's example-level DP-SGD statement for `--sample_dp`.
"""

import math
import os

import dp_accounting
import pytest
from tensorflow_privacy.privacy.analysis import compute_dp_sgd_privacy_lib

import train_binary  # tests/train_binary.py: the binary in this process

NUM_CLIENTS, COHORT, DELTA = 10, 5, 1e-5
SMALL = ['--task=digits', '--model=logreg', f'--num_clients={NUM_CLIENTS}', f'--clients_per_round={COHORT}',
         '--client_batch_size=20', '--rounds_per_eval=2']
DP_FIXED = ['--dp=fixed', '--noise_multiplier=1.0', '--client_weighting=uniform']


def _flags(out_dir, name, *flags):
  return [f'--root_output_dir={out_dir}', f'--experiment_name={name}', *SMALL, *flags]


def _run(out_dir, name, *flags):
  proc = train_binary.run(*_flags(out_dir, name, *flags))
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows, summary = train_binary.read_outputs(os.path.join(out_dir, name))
  return proc, rows, summary


def _rdp_epsilon(round_event, rounds, relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE):
  acc = dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
  return acc.compose(dp_accounting.SelfComposedDpEvent(round_event, rounds)).get_epsilon(DELTA)


def _poisson_epsilon(rounds, z=1.0):
  return _rdp_epsilon(dp_accounting.PoissonSampledDpEvent(COHORT / NUM_CLIENTS, dp_accounting.GaussianDpEvent(z)),
                      rounds)


def test_poisson_fixed_dp_reports_dp_accounting_epsilon_every_round(tmp_path):
  _, rows, summary = _run(tmp_path, 'a', *DP_FIXED, '--client_sampling=poisson', '--total_rounds=4')
  assert [int(r['round']) for r in rows] == [1, 2, 3, 4]
  for r in rows:
    assert float(r['epsilon']) == pytest.approx(_poisson_epsilon(int(r['round'])), rel=1e-9, abs=1e-12)
  # A Poisson cohort's size depends on the population (add/remove adjacency): not released under --dp.
  assert 'clients' not in rows[0] and 'poisson' in summary['privacy']['released']['suppressed']['clients']
  assert summary['rounds_completed'] == 4 and summary['stop_reason'] == 'completed'
  assert summary['epsilon'] == pytest.approx(_poisson_epsilon(4), rel=1e-9)
  assert not summary['privacy_budget_exhausted'] and summary['target_delta'] == DELTA
  assert summary['privacy']['client_sampling'] == 'poisson' and summary['privacy']['accountant'] == 'rdp'


def test_target_epsilon_stops_before_the_round_that_would_exceed_it(tmp_path):
  eps = [_poisson_epsilon(t) for t in (1, 2, 3)]
  assert eps[0] < eps[1] < eps[2]
  target = (eps[1] + eps[2]) / 2  # The budget affords k=2 of the 4 requested rounds.
  proc, rows, summary = _run(tmp_path, 'b', *DP_FIXED, '--client_sampling=poisson', '--total_rounds=4',
                             f'--target_epsilon={target!r}')
  assert 'Stopping before round 3' in proc.stdout and 'privacy budget' in proc.stdout
  assert 'round    3/' not in proc.stdout
  assert [int(r['round']) for r in rows] == [1, 2]
  assert all(float(r['epsilon']) <= target for r in rows)
  assert summary['rounds_completed'] == 2 and summary['rounds_within_budget'] == 2
  assert summary['privacy_budget_exhausted'] and 'privacy budget' in summary['privacy_stop_message']
  assert 'privacy budget' in summary['stop_reason'] and summary['target_epsilon'] == pytest.approx(target)
  assert summary['epsilon'] == pytest.approx(eps[1], rel=1e-9) and summary['epsilon'] <= target
  ckpts = sorted(f for f in os.listdir(tmp_path / 'b' / 'checkpoints') if f.startswith('ckpt_'))
  assert ckpts[-1] == 'ckpt_000002.npz'  # No model past the budget is ever saved.


def test_sample_dp_reports_example_level_epsilon(tmp_path):
  z = 1.0
  _, rows, summary = _run(tmp_path, 'd', '--sample_dp', f'--sample_noise_multiplier={z}', '--sample_clip_norm=1.0',
                          '--total_rounds=2', '--client_epochs_per_round=1')
  # tensorflow-privacy's example-level statement: shuffled batches (no amplification), microbatches of one.
  example_privacy = compute_dp_sgd_privacy_lib._compute_dp_sgd_example_privacy  # pylint: disable=protected-access
  ref = [example_privacy(epochs, z, DELTA) for epochs in (1, 2)]
  example_eps = [float(r['example_epsilon']) for r in rows]
  assert example_eps[0] == pytest.approx(ref[0], rel=1e-9)  # After one round every sampled client joined once.
  assert any(example_eps[1] == pytest.approx(v, rel=1e-9) for v in ref)  # Worst client joined once or twice.
  assert summary['example_epsilon'] == pytest.approx(example_eps[-1], rel=1e-12)
  assert all(math.isinf(float(r['epsilon'])) for r in rows) and summary['epsilon'] is None  # No client-level DP.


def test_secure_bits_distributed_dp_run_completes(tmp_path):
  _, rows, summary = _run(tmp_path, 'e', *DP_FIXED, '--secure_bits=16', '--total_rounds=2', '--engine=tff')
  assert summary['rounds_completed'] == 2 and 0.0 <= summary['eval_accuracy'] <= 1.0
  assert summary['privacy']['secure_bits'] == 16 and summary['privacy']['epsilon_is_approximate']
  # Fixed-size sampling: accounted as sampling without replacement, replace-one adjacency.
  event = dp_accounting.SampledWithoutReplacementDpEvent(NUM_CLIENTS, COHORT, dp_accounting.GaussianDpEvent(1.0))
  for r in rows:
    assert float(r['epsilon']) == pytest.approx(
        _rdp_epsilon(event, int(r['round']), dp_accounting.NeighboringRelation.REPLACE_ONE), rel=1e-9)


MISMATCHES = {
    'tree_with_poisson': (['--dp=tree', '--client_sampling=poisson', '--client_weighting=uniform'],
                          '--dp=tree needs --client_sampling=cyclic'),
    'pld_with_uniform': (['--accountant=pld', '--client_sampling=uniform', '--dp=fixed', '--client_weighting=uniform'],
                         '--accountant=pld supports only --client_sampling=poisson'),
    'weighted_clients': (['--dp=fixed', '--client_weighting=num_examples'], '--client_weighting=uniform'),
    'budget_without_dp': (['--target_epsilon=1', '--dp=none'], '--target_epsilon needs --dp='),
    'robust_aggregator': (['--dp=fixed', '--aggregator=median', '--client_weighting=uniform'],
                          '--aggregator=median and --dp=fixed both set the model update aggregator'),
    'secure_sum_without_dp': (['--secure_bits=16'], '--secure_bits needs --dp=fixed|adaptive'),
}


@pytest.fixture(scope='module')
def mismatch_runs(tmp_path_factory):
  """All refused runs (each fails before any round), in this process."""
  out = tmp_path_factory.mktemp('bad')
  return {name: train_binary.run(*_flags(out, name, '--total_rounds=2', *flags))
          for name, (flags, _) in MISMATCHES.items()}, out


@pytest.mark.parametrize('name', list(MISMATCHES))
def test_mismatched_flags_are_one_line_errors(mismatch_runs, name):
  results, out = mismatch_runs
  returncode, _, stderr = results[name]
  assert returncode == 2, stderr[-2000:]
  err = stderr.strip()
  assert err.count('\n') == 0 and MISMATCHES[name][1] in err, err
  assert 'Traceback' not in stderr
  assert not os.path.exists(out / name / 'metrics.csv')


def test_dp_runs_are_reproducible_from_the_seed(tmp_path):
  """Same --seed, same DP noise: two adaptive-clipping DP runs write identical metrics (the noise is keyed by the
  seed; tests/aggregators/test_seeded_queries.py checks other seeds differ and resumes continue the stream)."""
  flags = ['--dp=adaptive', '--noise_multiplier=0.3', '--client_weighting=uniform', '--total_rounds=3', '--seed=2']
  runs = [_run(tmp_path, name, *flags)[1] for name in ('r1', 'r2')]
  assert len(runs[0]) == 3
  for a, b in zip(*runs):
    assert {k: v for k, v in a.items() if 'seconds' not in k} == {k: v for k, v in b.items() if 'seconds' not in k}
  assert len({r['aggregator/dp_query_metrics/clip'] for r in runs[0]}) == 3  # The adaptive clip moves.
