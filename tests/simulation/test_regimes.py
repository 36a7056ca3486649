"""Participation regimes: event statistics vs their definitions; the Cohort a regime reports; drop vs partial
straggler policy on the engine vs stock TFF FedAvg on the same clients' (truncated) datasets.

Statistical checks use thousands of (round, client) draws and a 5-sigma binomial tolerance.
"""

import collections
import math

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import fed_avg
from tff_fl.simulation import regimes
from tff_fl.simulation import training_loop

IDS = [f'c{i:05d}' for i in range(4000)]


def _within(count, n, p):
  assert abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1, (count, n, p)


def test_dropout_and_straggler_rates_match_definitions():
  part = regimes.Participation(dropout_rate=0.2, straggler_fraction=0.3, straggler_policy='partial', seed=3)
  total_steps = 7
  fates = [part.fate(r, c, total_steps) for r in (1, 2) for c in IDS]
  dropped = sum(f.dropped for f in fates)
  _within(dropped, len(fates), 0.2)
  stragglers = [f for f in fates if f.straggler]
  _within(len(stragglers), len(fates) - dropped, 0.3)  # Among clients that did not drop.
  steps = np.array([f.steps if f.steps is not None else 0 for f in stragglers])
  assert steps.min() >= 0 and steps.max() <= total_steps - 1
  # floor(u * S) with u ~ U[0, 1) is uniform on {0..S-1}: mean (S-1)/2, each value with probability 1/S.
  for value in range(total_steps):
    _within(int(np.sum(steps == value)), steps.size, 1 / total_steps)
  assert all(f.reported == (f.steps is not None) for f in stragglers)  # Partial keeps stragglers with work done.
  assert not any(f.reported for f in fates if f.dropped)
  assert part.fate(2, IDS[5], total_steps) == part.fate(2, IDS[5], total_steps)  # Depends only on (seed, round, id).


def test_drop_policy_never_reports_a_straggler():
  part = regimes.Participation(straggler_fraction=0.5, straggler_policy='drop', seed=0)
  fates = [part.fate(1, c, 5) for c in IDS[:1000]]
  assert any(f.straggler for f in fates)
  assert all(f.reported != f.straggler for f in fates)


def test_diurnal_availability_matches_definition():
  pattern = regimes.DiurnalAvailability(len(IDS), seed=1, period=24, window=8)
  masks = np.stack([pattern.available(r) for r in range(24)])
  np.testing.assert_array_equal(masks.sum(axis=0), 8)  # Each client: exactly `window` rounds of every period.
  for r in (0, 11):
    _within(int(masks[r].sum()), len(IDS), 8 / 24)
  np.testing.assert_array_equal(masks[0], pattern.available(24))  # Periodic.
  sampler = regimes.AvailabilitySampler(IDS, 10, seed=1, availability='diurnal')
  cohort = sampler.sample(5)
  available = {c for c, a in zip(IDS, sampler.pattern.available(5)) if a}
  assert len(cohort) == 10 and set(cohort) <= available and sampler.last_available == len(available)


def test_validation_errors():
  with pytest.raises(ValueError, match='^dropout_rate must be in'):
    regimes.Participation(dropout_rate=1.0)
  with pytest.raises(ValueError, match='^straggler_policy must be one of'):
    regimes.Participation(straggler_policy='wait')
  with pytest.raises(ValueError, match='^availability must be one of'):
    regimes.AvailabilitySampler(IDS, 10, 0, availability='weekly')
  with pytest.raises(ValueError, match='^regime=cross_device needs num_clients >= 1000'):
    regimes.check_regime('cross_device', 1000, 50)
  with pytest.raises(ValueError, match='^regime=cross_silo needs'):
    regimes.check_regime('cross_silo', 10, 5)
  regimes.check_regime('cross_device', 2000, 10)
  regimes.check_regime('cross_silo', 10, 10)


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(num_clients=8, model='logreg', partition='iid', seed=0))


def _flat(weights):
  return np.concatenate([np.ravel(w) for w in weights.trainable])


def test_drop_vs_partial_straggler_update_vs_stock_fedavg(task):
  cfg = training_loop.LoopConfig(client_batch_size=8, client_epochs_per_round=2, seed=0)
  cohort = task.client_ids[:4]
  parts = {p: regimes.RegimeParticipation(task, cfg, regimes.Participation(straggler_fraction=0.5,
                                                                            straggler_policy=p, seed=0))
           for p in ('drop', 'partial')}
  # First round (deterministic search over the definition) with at least one straggler that finished some steps.
  round_num = next(r for r in range(1, 200) if any(f.steps for f in parts['partial'].plan(r, cohort))
                   and not all(f.straggler for f in parts['partial'].plan(r, cohort)))
  fates = parts['partial'].plan(round_num, cohort)
  partial, drop = parts['partial'](round_num, cohort), parts['drop'](round_num, cohort)
  reporters = [f for f in fates if f.reported]
  # The Cohort says who reported and how far each got; the sampled cohort travels with it.
  assert partial.client_ids == tuple(f.client_id for f in reporters) and partial.sampled == tuple(cohort)
  assert partial.steps == tuple(f.steps for f in reporters) and any(s is not None for s in partial.steps)
  assert drop.client_ids == tuple(f.client_id for f in fates if not f.straggler) and set(drop.steps) == {None}
  assert parts['partial'].stats == collections.OrderedDict(
      sampled=4, dropped=0, stragglers=sum(f.straggler for f in fates),
      partial=sum(f.steps is not None for f in fates), reported=len(reporters))
  assert parts['partial'].round_num == round_num

  sgd = lambda lr: tff.learning.optimizers.build_sgdm(lr)
  packed = engine.build_task_process(fed_avg.FedAvg(), task, epochs=2, batch_size=8, seed=0,
                                     client_optimizer=sgd(0.1), server_optimizer=sgd(1.0))
  proc = tff.learning.algorithms.build_weighted_fed_avg(task.model_fn, client_optimizer_fn=sgd(0.1),
                                                        server_optimizer_fn=sgd(1.0))
  w0 = task.initial_weights(0)
  start = proc.set_model_weights(proc.initialize(), w0)
  packed_start = packed.set_model_weights(packed.initialize(), w0)
  run = lambda c: _flat(packed.get_model_weights(packed.next(packed_start, c).state))
  full = {f.client_id: task.train_dataset(f.client_id, epochs=2, batch_size=8, seed=0, round_num=round_num)
          for f in fates}

  def single(ds):
    out = proc.next(start, [ds])
    return _flat(w0) - _flat(proc.get_model_weights(out.state)), float(out.metrics['client_work']['train'][
        'num_examples'])

  # drop: exactly stock FedAvg over the non-stragglers.
  ref = proc.next(start, [full[f.client_id] for f in fates if not f.straggler])
  np.testing.assert_allclose(run(drop), _flat(proc.get_model_weights(ref.state)), rtol=1e-5, atol=1e-6)
  # partial: example-weighted mean of each reporter's own update, the straggler's from its truncated data.
  singles = [single(full[f.client_id] if f.steps is None else full[f.client_id].take(f.steps)) for f in reporters]
  n = np.array([e for _, e in singles])
  expected = _flat(w0) - np.sum([d * e for d, e in singles], axis=0) / n.sum()
  got = run(partial)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert np.abs(got - run(drop)).max() > 1e-4  # The policy changes the update.


def test_regime_hook_reports_the_rounds_events_and_totals(task):
  cfg = training_loop.LoopConfig(client_batch_size=8, client_epochs_per_round=2, seed=0)
  regime = regimes.RegimeParticipation(task, cfg, regimes.Participation(dropout_rate=0.5, seed=1))
  hook = regimes.RegimeHook(regime)
  rows = []
  for r in (1, 2):
    cohort = regime(r, task.client_ids)
    rows.append({})
    hook.after_round(r, None, rows[-1])
    assert rows[-1]['regime/reported'] == len(cohort.client_ids) and rows[-1]['regime/sampled'] == 8
    assert rows[-1]['regime/dropped'] == 8 - len(cohort.client_ids)
  hook.after_round(3, None, row := {})  # A round the participation did not see adds nothing.
  assert not row
  assert hook.summary()['regime_total_reported'] == sum(r['regime/reported'] for r in rows)
  restored = regimes.RegimeHook(regime)
  restored.restore_arrays(hook.checkpoint_arrays())
  assert restored.summary() == hook.summary()
  sampler = regimes.AvailabilitySampler(task.client_ids, 2, seed=1, availability='diurnal')
  sampler.sample(3)
  regimes.AvailabilityHook(sampler).after_round(3, None, row)
  assert row == {'regime/available': sampler.last_available}
