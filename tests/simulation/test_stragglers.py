"""FedProx's straggler model: exact straggler counts (as FedProx's `active_clients`), epochs in [1, E), and the
Cohort FedAvg (drop) and FedProx (partial work) get, its packed examples counted example by example."""

import math

import numpy as np
import pytest

from tff_fl import engine
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


@pytest.mark.parametrize('policy', ['partial', 'drop'])
def test_cohort_per_policy(task, policy):
  cfg = training_loop.LoopConfig(clients_per_round=6, client_epochs_per_round=4, client_batch_size=7, seed=3)
  participation = stragglers.FedProxStragglers(task, cfg, 0.5, policy)
  sampled = task.client_ids
  late = stragglers.straggler_epochs(3, 2, sampled, 0.5, 4)
  cohort = participation(2, sampled)
  assert isinstance(cohort, engine.Cohort) and cohort.sampled == tuple(sampled) and cohort.round_num == 2
  sizes = task.data.num_examples('train')
  packer = engine.packing.Packer(task.data.train, lambda c, r: task.train_order(c, epochs=4, seed=3, round_num=r),
                                 batch_size=7)
  examples = [len(o) for o in packer.orders(cohort)]  # What the engine packs for each reporting client.
  if policy == 'drop':
    on_time = tuple(c for c in sampled if c not in late)
    assert cohort.client_ids == on_time and set(cohort.steps) == {None}
    assert examples == [4 * sizes[c] for c in on_time]
  else:
    # k passes over the client's n examples, rounded up to whole batches of 7 (the E-pass stream is batched across
    # epoch boundaries); on-time clients do all E = 4 passes.
    batches = [math.ceil(late.get(c, 4) * sizes[c] / 7) for c in sampled]
    assert cohort.client_ids == tuple(sampled)
    assert cohort.steps == tuple(b if c in late else None for b, c in zip(batches, sampled))
    assert examples == [min(b * 7, 4 * sizes[c]) for b, c in zip(batches, sampled)]
  assert participation.stats['stragglers'] == 3 and participation.stats['reported'] == (6 if policy == 'partial' else 3)


def test_needs_two_epochs(task):
  with pytest.raises(ValueError, match='^straggler_model=fedprox needs client_epochs_per_round >= 2'):
    stragglers.FedProxStragglers(task, training_loop.LoopConfig(client_epochs_per_round=1), 0.5, 'partial')
