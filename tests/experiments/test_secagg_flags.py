"""The binary (in process) with --aggregator=secagg(...)>mean and --dropout_rate: rounds with fewer than t survivors abort
(secagg/aborted = 1, the checkpointed state equals the previous round's) and the run goes on."""

import csv
import json

import numpy as np

from experiments import train
COHORT = 5


def test_rounds_below_threshold_abort_and_the_run_goes_on(tmp_path, parse):
  # threshold 1.0: t = 5 of 5, so any dropout aborts the round.
  parse(f'--root_output_dir={tmp_path}', '--experiment_name=s', '--task=digits', '--model=logreg', '--num_clients=12',
        f'--clients_per_round={COHORT}', '--client_batch_size=20', '--rounds_per_eval=10', '--total_rounds=4',
        '--client_weighting=uniform', '--aggregator=clip(1.0)>secagg(16,1.0)>mean', '--dropout_rate=0.15', '--seed=1')
  train.train(train.build_experiment(), log=lambda line: None)
  with open(tmp_path / 's' / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['round'] for r in rows] == ['1', '2', '3', '4']
  aborted = [int(float(r['secagg/aborted'])) for r in rows]
  assert aborted == [int(float(r['regime/dropped']) > 0) for r in rows]
  assert 0 < sum(aborted) < 4, aborted  # This seed has both kinds of round.
  for r in rows:
    assert int(float(r['secagg/threshold'])) == COHORT
    assert int(float(r['secagg/survivors'])) == int(float(r['regime/reported']))
  summary = json.loads((tmp_path / 's' / 'summary.json').read_text())
  assert summary['secagg_aborted_rounds'] == sum(aborted) and summary['rounds_completed'] == 4
  # The two newest checkpoints (rounds 3 and 4): equal states iff round 4 aborted.
  ckpts = [np.load(tmp_path / 's' / 'checkpoints' / f'ckpt_{r:06d}.npz') for r in (3, 4)]
  keys = sorted(k for k in ckpts[0].files if k.startswith('state/'))
  same = all(np.array_equal(ckpts[0][k], ckpts[1][k]) for k in keys)
  assert same == bool(aborted[3])
