"""The experiment is assembled from what components declare, not from the order they run in: the binary with its
components configured in the registered order, reversed and shuffled gives the same metrics, or the same refusal."""

import csv
import os
import random

import pytest

from experiments import train

import train_binary  # tests/train_binary.py

SMALL = ['--task=digits', '--model=logreg', '--num_clients=8', '--clients_per_round=5', '--client_batch_size=20',
         '--total_rounds=2', '--rounds_per_eval=2']
CONFIGS = {
    # Aggregator chain + top-k EF (an aggregator wrapper around it) + attack + dropouts + drift + normalisation.
    'composed': ['--aggregator=clip(1.0)>trimmed_mean(0.2)', '--compression=topk_ef(0.3)', '--attack=label_flip',
                 '--byzantine_fraction=0.2', '--dropout_rate=0.2', '--drift_metrics',
                 '--client_preprocess=normalize(client)', '--num_clients=10', '--clients_per_round=8'],
    # DP's sampler and aggregator, wrapped by top-k EF's sparsifying stage.
    'dp': ['--dp=fixed', '--noise_multiplier=0.5', '--compression=topk_ef(0.3)', '--dropout_rate=0.2'],
    'two_aggregators': ['--dp=fixed', '--aggregator=median'],  # Refused: both set the aggregator.
    'two_samplers': ['--dp=fixed', '--availability=diurnal'],  # Refused: both choose the sampled clients.
}


def _orders():
  given = list(train._COMPONENTS)  # pylint: disable=protected-access
  shuffled = list(given)
  random.Random(0).shuffle(shuffled)
  return {'registered': given, 'reversed': given[::-1], 'shuffled': shuffled}


def _outcome(tmp_path, monkeypatch, name, flags, order):
  monkeypatch.setattr(train, '_COMPONENTS', order)
  result = train_binary.run(f'--root_output_dir={tmp_path}', f'--experiment_name={name}', *SMALL, *flags)
  rows = []
  path = os.path.join(tmp_path, name, 'metrics.csv')
  if os.path.exists(path):
    with open(path) as f:
      rows = [{k: v for k, v in r.items() if not k.endswith('seconds')} for r in csv.DictReader(f)]
  return result.returncode, result.stderr.strip() if result.returncode else '', rows


@pytest.mark.parametrize('config', list(CONFIGS))
def test_component_order_does_not_change_the_run(tmp_path, monkeypatch, config):
  outcomes = {name: _outcome(tmp_path, monkeypatch, f'{config}_{name}', CONFIGS[config], order)
              for name, order in _orders().items()}
  first = outcomes['registered']
  if config.startswith('two_'):
    assert first[0] == 2 and first[1].count('\n') == 0 and 'both' in first[1], first
  else:
    assert first[0] == 0 and len(first[2]) == 2, first
  for name, outcome in outcomes.items():
    assert outcome == first, (name, outcome[:2], first[:2])
