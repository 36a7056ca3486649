"""The binary end to end: smoke runs per algorithm, outputs, determinism, resume after kill -9, bad input.

Runs are in this process (tests/train_binary.py) except the first smoke run, the kill -9 and the output-dir check,
which start the real binary."""

import csv
import json
import os
import signal
import subprocess

import pytest

from tff_fl.simulation import contexts

import train_binary  # tests/train_binary.py

SMALL = ['--task=digits', '--model=logreg', '--num_clients=8', '--clients_per_round=4', '--client_batch_size=20',
         '--total_rounds=2', '--rounds_per_eval=1']


def _flags(out_dir, *flags):
  return [f'--root_output_dir={out_dir}', *SMALL, *flags]


def _run(out_dir, *flags, check=True, subprocess=False):  # pylint: disable=redefined-outer-name
  proc = train_binary.run(*_flags(out_dir, *flags), subprocess=subprocess)
  if check:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _metrics(path):
  with open(os.path.join(path, 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  return [{k: v for k, v in r.items() if not k.endswith('seconds')} for r in rows]


@pytest.mark.parametrize('flags', [
    ['--algorithm=fedavg'],
    ['--algorithm=fedprox', '--mu=0.1'],
    ['--algorithm=fedsgd', '--server_learning_rate=0.5'],
    ['--algorithm=fednova', '--client_optimizer=momentum', '--client_momentum=0.5'],
    ['--algorithm=fedavg', '--server_optimizer=adam', '--server_learning_rate=0.01', '--client_weighting=uniform'],
    ['--algorithm=scaffold', '--client_weighting=uniform'],
    ['--algorithm=feddyn', '--feddyn_alpha=0.01', '--client_weighting=uniform'],
    ['--algorithm=ditto', '--ditto_lambda=0.1'],
])
def test_smoke_runs_write_outputs(tmp_path, flags):
  proc = _run(tmp_path, '--experiment_name=e', *flags, subprocess=flags == ['--algorithm=fedavg'])
  assert 'round    2/2' in proc.stdout
  exp = tmp_path / 'e'
  summary = json.loads((exp / 'summary.json').read_text())
  assert summary['rounds_completed'] == 2 and 0.0 <= summary['eval_accuracy'] <= 1.0
  for key in ('eval_loss', 'client_accuracy_min', 'client_accuracy_p10', 'client_accuracy_p50', 'client_accuracy_p90'):
    assert key in summary
  hparams = json.loads((exp / 'hparams.json').read_text())
  assert hparams['algorithm'] == flags[0].split('=')[1] and hparams['num_clients'] == 8
  rows = _metrics(exp)
  assert [r['round'] for r in rows] == ['1', '2']
  assert {'train_loss', 'train_accuracy', 'eval_loss', 'eval_accuracy'} <= set(rows[0])
  assert os.listdir(exp / 'tb') and os.listdir(exp / 'checkpoints')
  if hparams['algorithm'] in ('scaffold', 'feddyn', 'ditto'):  # Stateful: per-client table, personal models.
    with open(exp / 'clients.csv') as f:
      clients = list(csv.DictReader(f))
    assert len(clients) == 8 and sum(int(c['rounds_participated']) for c in clients) > 0
    assert ('accuracy_personal' in clients[0]) == (hparams['algorithm'] == 'ditto')


def test_components_change_what_every_algorithm_trains(tmp_path):
  """Regression: FedPer with dropouts used to train exactly like FedAvg with the same dropouts (its personal heads
  were silently dropped). On the one engine the participation and the algorithm compose: the losses differ from
  round 2 on, and the dropouts really happen (fewer reporters than sampled)."""
  common = ['--model=2nn', '--dropout_rate=0.3', '--num_clients=8', '--clients_per_round=8', '--total_rounds=3']
  _run(tmp_path, '--experiment_name=avg', '--algorithm=fedavg', *common)
  _run(tmp_path, '--experiment_name=per', '--algorithm=fedper', *common)
  avg, per = _metrics(tmp_path / 'avg'), _metrics(tmp_path / 'per')
  assert [r['regime/reported'] for r in avg] == [r['regime/reported'] for r in per]
  assert any(int(r['regime/reported']) < 8 for r in avg)
  assert avg[0]['train_loss'] == per[0]['train_loss']  # Round 1: every head starts from the server's.
  assert any(a['train_loss'] != p['train_loss'] for a, p in zip(avg[1:], per[1:]))


def test_same_seed_same_metrics_and_resume_after_kill(tmp_path):
  flags = ['--total_rounds=6', '--rounds_per_checkpoint=1', '--num_clients=10', '--clients_per_round=5']
  _run(tmp_path, '--experiment_name=a', *flags)
  _run(tmp_path, '--experiment_name=b', *flags)
  assert _metrics(tmp_path / 'a') == _metrics(tmp_path / 'b')  # Bit for bit, timing aside.

  # kill -9 after round 3 is checkpointed, then re-run the same command.
  proc = subprocess.Popen(train_binary.command(*_flags(tmp_path, '--experiment_name=k', *flags)),
                          cwd=train_binary.REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          stdin=subprocess.DEVNULL, text=True, env=train_binary.ENV)
  for line in proc.stdout:
    if line.startswith('round    3/'):
      break
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  proc.stdout.close()
  rerun = _run(tmp_path, '--experiment_name=k', *flags)
  assert 'Resumed from checkpoint at round' in rerun.stdout
  assert _metrics(tmp_path / 'k') == _metrics(tmp_path / 'a')
  final = lambda name: json.loads((tmp_path / name / 'summary.json').read_text())
  assert final('k')['eval_accuracy'] == final('a')['eval_accuracy']
  assert final('k')['per_client_accuracy'] == final('a')['per_client_accuracy']


@pytest.mark.parametrize('flags', [['--algorithm=fedavg'], ['--algorithm=ditto', '--finetune_epochs=1']])
def test_one_slot_runs_start_no_tff_worker(tmp_path, monkeypatch, flags):
  """Training, evaluation (global, personal, fine-tuned) and initialization of a one-slot run happen in this
  process: TFF's worker_binary is not needed at all."""
  def no_worker(*args, **kwargs):
    raise AssertionError('a TFF worker was started')
  monkeypatch.setattr(contexts, 'start_worker', no_worker)
  _run(tmp_path, '--experiment_name=w', *flags)


def test_changed_configuration_is_refused_and_nothing_destroyed(tmp_path):
  _run(tmp_path, '--experiment_name=c')
  before = (tmp_path / 'c' / 'metrics.csv').read_text()
  proc = _run(tmp_path, '--experiment_name=c', '--client_learning_rate=0.5', check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().count('\n') == 0 and '--client_learning_rate' in proc.stderr
  assert (tmp_path / 'c' / 'metrics.csv').read_text() == before


def test_a_run_resumes_with_another_client_axis(tmp_path):
  """--client_axis changes how clients run, not what they compute (up to float rounding): not part of the resume
  fingerprint, so a checkpoint written with (or before) one value resumes with another."""
  _run(tmp_path, '--experiment_name=axis', '--total_rounds=1', '--rounds_per_checkpoint=1', '--rounds_per_eval=1')
  _run(tmp_path, '--experiment_name=axis', '--total_rounds=2', '--rounds_per_checkpoint=1', '--rounds_per_eval=1',
       '--client_axis=false')
  assert [r['round'] for r in _metrics(tmp_path / 'axis')] == ['1', '2']


@pytest.mark.parametrize('flags,expected', [
    (['--task=cifar1000'], '--task must be one of'),
    (['--algorithm=fedfoo'], '--algorithm must be one of'),
    (['--clients_per_round=50'], '--clients_per_round must be <= --num_clients'),
    (['--client_learning_rate=-0.1'], '--client_learning_rate must be > 0'),
    (['--partition=dirichlet', '--dirichlet_alpha=0.001', '--num_clients=200'], '--dirichlet_alpha'),
    (['--model=cnn', '--task=synthetic'], '--model=cnn'),
    (['--server_optimizer=lamb'], '--server_optimizer must be one of'),
])
def test_invalid_input_is_one_line_error(tmp_path, flags, expected):
  proc = _run(tmp_path, '--experiment_name=bad', *flags, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  err = proc.stderr.strip()
  assert err.count('\n') == 0 and expected in err, err
  assert 'Traceback' not in proc.stderr


def test_output_dir_that_is_a_file(tmp_path):
  (tmp_path / 'file').write_text('keep me')
  proc = _run(tmp_path / 'file', '--experiment_name=x', check=False, subprocess=True)
  assert proc.returncode == 2 and '--root_output_dir' in proc.stderr and proc.stderr.strip().count('\n') == 0
  assert (tmp_path / 'file').read_text() == 'keep me'
