"""The binary with --aggregator / --byzantine_fraction / --attack: measurements reach metrics.csv; bad values exit 2."""

import csv
import json
import math

import pytest

import train_binary  # tests/train_binary.py: the binary in this process
COHORT = 5
SMALL = ['--task=digits', '--model=logreg', '--num_clients=10', f'--clients_per_round={COHORT}',
         '--client_batch_size=20', '--total_rounds=2', '--rounds_per_eval=2']


def _run(out_dir, *flags):
  return train_binary.run(f'--root_output_dir={out_dir}', *SMALL, *flags)


def test_clip_trimmed_mean_under_sign_flip_writes_measurements(tmp_path):
  beta, fraction = 0.2, 0.2
  proc = _run(tmp_path, '--experiment_name=a', f'--aggregator=clip(1.0)>trimmed_mean({beta})',
              f'--byzantine_fraction={fraction}', '--attack=sign_flip', '--attack_scale=10')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / 'a' / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['round'] for r in rows] == ['1', '2']
  attackers = math.floor(fraction * COHORT)  # 1 of 5, sending -10x its update.
  for r in rows:
    assert int(r['clients']) == COHORT
    clipped = int(float(r['aggregator/clipped_count']))
    # At least the attacker (10x an honest update's norm) is clipped; never more than the cohort.
    assert attackers <= clipped <= COHORT
    assert float(r['aggregator/clipping_norm']) == 1.0
    # The inner trimmed mean sees the whole cohort and drops floor(beta*n) per side, as scipy.stats.trim_mean does.
    assert int(float(r['aggregator/clipping/cohort_size'])) == COHORT
    assert int(float(r['aggregator/clipping/trimmed_count'])) == 2 * int(beta * COHORT)
  hparams = json.loads((tmp_path / 'a' / 'hparams.json').read_text())
  assert hparams['aggregator'] == f'clip(1.0)>trimmed_mean({beta})' and hparams['attack'] == 'sign_flip'
  assert hparams['byzantine_fraction'] == fraction


@pytest.mark.parametrize('flags,expected', [
    (['--aggregator=trimmed_mean(0.1)>foo'], "--aggregator='trimmed_mean(0.1)>foo': unknown stage 'foo'"),
    (['--aggregator=krum(2)'], 'needs n > 2f+2'),  # A cohort of 5 cannot tolerate f=2.
    (['--attack=poison', '--byzantine_fraction=0.2'], '--attack must be one of'),
])
def test_bad_aggregator_or_attack_is_one_line_error(tmp_path, flags, expected):
  proc = _run(tmp_path, '--experiment_name=bad', *flags)
  assert proc.returncode == 2, proc.stderr[-2000:]
  err = proc.stderr.strip()
  assert err.count('\n') == 0 and expected in err and 'Traceback' not in err, err
  assert not (tmp_path / 'bad' / 'metrics.csv').exists()


def test_krum_with_dropouts_counts_malicious_and_selected(tmp_path):
  """Dropouts shrink the reporting set: attack flags follow the clients that reported (not cohort positions), and
  Krum's selected positions are mapped back to them (`attack/malicious_selected`)."""
  proc = _run(tmp_path, '--experiment_name=k', '--num_clients=12', '--clients_per_round=10', '--dropout_rate=0.2',
              '--aggregator=krum(1)', '--byzantine_fraction=0.2', '--attack=sign_flip', '--attack_scale=10',
              '--total_rounds=3')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / 'k' / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert any(int(r['regime/reported']) < 10 for r in rows)  # Some rounds lost clients.
  for r in rows:
    assert 0 <= int(r['attack/malicious']) <= 2  # 2 of the 10 sampled are malicious; dropped ones do not count.
    assert int(r['attack/malicious_selected']) == 0  # A -10x update is never Krum's pick.


def test_too_few_reporting_clients_for_krum_is_one_line_error(tmp_path):
  """Half the cohort of 5 drops out: Krum(f=1) needs more than 4 reporting clients. The round's TF assertion
  becomes one line naming the round; earlier rounds' outputs stay."""
  proc = _run(tmp_path, '--experiment_name=few', '--dropout_rate=0.5', '--aggregator=krum(1)', '--total_rounds=4')
  assert proc.returncode == 2, proc.stderr[-2000:]
  err = proc.stderr.strip()
  assert err.count('\n') == 0 and 'Traceback' not in err, err
  assert err.startswith('error: round ') and 'krum(f=1, m=1) needs n > 2f+2 = 4' in err, err
