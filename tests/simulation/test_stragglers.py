"""FedProx's straggler model: exact straggler counts (as FedProx's `active_clients`), epochs in [1, E), and the
datasets FedAvg (drop) and FedProx (partial work) receive, counted example by example."""

import math

import numpy as np
import pytest

from tff_fl import tasks
from tff_fl.simulation import stragglers
from tff_fl.simulation import training_loop


def test_num_stragglers_matches_fedprox_rounding():
  # FedProx: active = round(n * (1 - drop)); stragglers = n - active; at least one client stays active.
  assert [stragglers.num_stragglers(10, f) for f in (0.0, 0.5, 0.9, 0.99)] == [0, 5, 9, 9]
  assert stragglers.num_stragglers(1, 0.9) == 0 and stragglers.num_stragglers(3, 0.5) == 1


def test_straggler_epochs_deterministic_and_in_range():
  cohort = [f'c{i}' for i in range(10)]
  draws = [stragglers.straggler_epochs(7, r, cohort, 0.9, 20) for r in range(1, 40)]
  assert draws[0] == stragglers.straggler_epochs(7, 1, cohort, 0.9, 20)
  assert all(len(d) == 9 and set(d) <= set(cohort) for d in draws)
  epochs = np.array([e for d in draws for e in d.values()])
  assert epochs.min() >= 1 and epochs.max() <= 19 and len(set(epochs.tolist())) > 10
  assert stragglers.straggler_epochs(7, 1, cohort, 0.0, 20) == {}


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(task='synthetic', model='logreg', num_clients=6, seed=1))


def _examples(ds):
  return sum(int(b['y'].shape[0]) for b in ds)


@pytest.mark.parametrize('policy', ['partial', 'drop'])
def test_inputs_per_policy(task, policy):
  cfg = training_loop.LoopConfig(clients_per_round=6, client_epochs_per_round=4, client_batch_size=7, seed=3)
  inputs = stragglers.FedProxStragglers(task, cfg, 0.5, policy)
  cohort = task.client_ids
  late = stragglers.straggler_epochs(3, 2, cohort, 0.5, 4)
  datasets = inputs(2, cohort)
  sizes = task.data.num_examples('train')
  if policy == 'drop':
    on_time = [c for c in cohort if c not in late]
    assert [_examples(d) for d in datasets] == [4 * sizes[c] for c in on_time]
  else:
    # k passes over the client's n examples, rounded up to whole batches of 7 (the E-pass dataset is batched across
    # epoch boundaries); on-time clients do all E = 4 passes.
    batches = [math.ceil(late.get(c, 4) * sizes[c] / 7) for c in cohort]
    assert [len(list(d)) for d in datasets] == batches
    assert [_examples(d) for d in datasets] == [min(b * 7, 4 * sizes[c]) for b, c in zip(batches, cohort)]
  assert inputs.stats['stragglers'] == 3 and inputs.stats['reported'] == (6 if policy == 'partial' else 3)


def test_needs_two_epochs(task):
  with pytest.raises(ValueError, match='--client_epochs_per_round >= 2'):
    stragglers.FedProxStragglers(task, training_loop.LoopConfig(client_epochs_per_round=1), 0.5, 'partial')
