"""The fast engine gives the weights and metrics of the reference paths: stock TFF FedAvg, and our FedProx /
aggregator chains on tf.data client datasets, on the same initial weights and data order."""

import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import tasks
from tff_fl.algorithms import fed_avg
from tff_fl.simulation import regimes
from tff_fl.simulation import stragglers
from tff_fl.simulation import training_loop
from tff_fl.simulation.fast import engine
from tff_fl.simulation.fast import packing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPOCHS, BATCH = 2, 10


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(task='digits', model='2nn', num_clients=30, seed=1))


def _run(process, inputs_fn, task, rounds=2, cohort_size=5):
  state = process.set_model_weights(process.initialize(), task.initial_weights(1))
  metrics = []
  for r in range(1, rounds + 1):
    cohort = task.client_ids[r:r + cohort_size]
    output = process.next(state, inputs_fn(r, cohort))
    state = output.state
    metrics.append(output.metrics)
  return [np.asarray(w) for w in tf.nest.flatten(process.get_model_weights(state))], metrics


def _reference_inputs(task):
  return training_loop.default_client_inputs(
      task, training_loop.LoopConfig(client_epochs_per_round=EPOCHS, client_batch_size=BATCH, seed=0))


def _fast_inputs(task, slots):
  return packing.build_client_inputs_fn(task, epochs=EPOCHS, seed=0, num_groups=slots)


def _assert_close(a, b, tol=1e-5):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=0, atol=tol)


def test_packing_reproduces_train_dataset_order(task):
  cohort = task.client_ids[:4]
  groups = _fast_inputs(task, 3)(7, cohort)
  assert [len(g['n']) for g in groups] == [1, 2, 1]
  rows = [(g['x'][c, :n], g['y'][c, :n]) for g in groups for c, n in enumerate(g['n'])]
  for cid, (x, y) in zip(cohort, rows):
    batches = list(task.train_dataset(cid, epochs=EPOCHS, batch_size=BATCH, seed=0, round_num=7).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([b['x'] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b['y'] for b in batches]), y)


def test_fed_avg_matches_stock_tff(task):
  opt = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  stock = tff.learning.algorithms.build_weighted_fed_avg(task.model_fn, client_optimizer_fn=opt)
  ref_w, ref_m = _run(stock, _reference_inputs(task), task)
  fast_w, fast_m = _run(engine.build_fast_fed_avg(task.model_fn, opt, batch_size=BATCH), _fast_inputs(task, 2), task)
  assert max(float(np.max(np.abs(w - w0))) for w, w0 in zip(fast_w, task.initial_weights(1).trainable)) > 1e-2
  _assert_close(fast_w, ref_w)
  for fast, ref in zip(fast_m, ref_m):
    f, r = fast['client_work']['train'], ref['client_work']['train']
    assert f['num_examples'] == r['num_examples'] and f['num_batches'] == r['num_batches']
    np.testing.assert_allclose(f['loss'], r['loss'], rtol=1e-5)
    np.testing.assert_allclose(f['sparse_categorical_accuracy'], r['sparse_categorical_accuracy'], rtol=1e-6)


def test_fed_prox_uniform_momentum_server_matches_reference(task):
  kwargs = dict(client_weighting=tff.learning.ClientWeighting.UNIFORM, proximal_mu=0.5)
  client = tff.learning.optimizers.build_sgdm(learning_rate=0.05, momentum=0.9)
  server = tff.learning.optimizers.build_sgdm(learning_rate=0.7, momentum=0.5)
  ref_w, _ = _run(fed_avg.build_fed_avg(task.model_fn, client, server, **kwargs), _reference_inputs(task), task)
  fast = engine.build_fast_fed_avg(task.model_fn, client, server, batch_size=BATCH, **kwargs)
  fast_w, _ = _run(fast, _fast_inputs(task, 1), task)
  _assert_close(fast_w, ref_w)


def test_fedprox_stragglers_match_reference(task):
  """FedProx's stragglers (an exact fraction of each cohort runs 1..E-1 epochs, 'partial' keeps that work) and
  per-client dropouts: the fast engine packs the reporting clients cut to their finished batches, the stock path
  takes that many batches of each dataset; weights and the regime counts agree."""
  cfg = training_loop.LoopConfig(client_epochs_per_round=3, client_batch_size=BATCH, seed=4)
  opt = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  for make_regime in (lambda: stragglers.FedProxStragglers(task, cfg, 0.6, 'partial'),
                      lambda: regimes.RegimeInputs(task, cfg, regimes.Participation(0.2, 0.5, 'partial', seed=4))):
    ref_regime, fast_regime = make_regime(), make_regime()
    ref_w, ref_m = _run(fed_avg.build_fed_prox(task.model_fn, opt, proximal_mu=0.5), ref_regime, task, rounds=3,
                        cohort_size=6)
    fast_inputs = packing.build_client_inputs_fn(task, epochs=3, seed=4, num_groups=2, batch_size=BATCH,
                                                 reports_fn=fast_regime.reports)
    fast = engine.build_fast_fed_avg(task.model_fn, opt, batch_size=BATCH, proximal_mu=0.5)
    fast_w, fast_m = _run(fast, fast_inputs, task, rounds=3, cohort_size=6)
    _assert_close(fast_w, ref_w)
    assert fast_regime.stats == ref_regime.stats and ref_regime.stats['partial'] > 0
    full = 3 * sum(task.data.num_examples('train')[c] for c in task.client_ids[3:9])
    batches = [m['client_work']['train']['num_batches'] for m in fast_m]
    assert batches == [m['client_work']['train']['num_batches'] for m in ref_m]
    assert fast_m[-1]['client_work']['train']['num_examples'] < full  # Partial work really was cut.


def test_aggregator_chain_runs_per_client(task):
  """Adaptive clipping (per-client clip, quantile state) inside zeroing: the clip counts and the evolving
  clip norm only match if every packed client goes through the chain on its own."""
  def factory():
    return tff.aggregators.zeroing_factory(
        5.0, tff.aggregators.clipping_factory(
            tff.aggregators.PrivateQuantileEstimationProcess.no_noise(1.0, learning_rate=0.2, target_quantile=0.5),
            tff.aggregators.MeanFactory()))
  opt = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  ref_w, ref_m = _run(fed_avg.build_fed_avg(task.model_fn, opt, model_aggregator=factory()), _reference_inputs(task),
                      task, rounds=3)
  fast = engine.build_fast_fed_avg(task.model_fn, opt, batch_size=BATCH, model_aggregator=factory())
  fast_w, fast_m = _run(fast, _fast_inputs(task, 2), task, rounds=3)
  _assert_close(fast_w, ref_w)
  clipped = [m['aggregator']['zeroing']['clipped_count'] for m in fast_m]
  assert clipped == [m['aggregator']['zeroing']['clipped_count'] for m in ref_m]
  assert 0 < sum(clipped) < 15  # Some, not all, clients were clipped: a per-client decision.
  norms = [m['aggregator']['zeroing']['clipping_norm'] for m in fast_m]
  np.testing.assert_allclose(norms, [m['aggregator']['zeroing']['clipping_norm'] for m in ref_m], rtol=1e-6)
  assert len(set(np.round(norms, 6))) == 3  # The adaptive clip norm (aggregator state) moved every round.


def test_bad_arguments_raise(task):
  opt = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  with pytest.raises(ValueError, match='batch_size'):
    engine.build_fast_fed_avg(task.model_fn, opt, batch_size=0)
  with pytest.raises(ValueError, match='proximal_mu'):
    engine.build_fast_fed_avg(task.model_fn, opt, batch_size=10, proximal_mu=-1.0)
  with pytest.raises(ValueError, match='num_groups'):
    packing.build_client_inputs_fn(task, epochs=1, seed=0, num_groups=0)(1, task.client_ids[:2])
  with pytest.raises(ValueError, match='secure aggregation'):
    engine.build_fast_fed_avg(task.model_fn, opt, batch_size=10,
                              model_aggregator=tff.aggregators.SecureSumFactory(upper_bound_threshold=1.0))


def _train(out_dir, *flags):
  cmd = [sys.executable, '-m', 'experiments.train', f'--root_output_dir={out_dir}', '--task=digits', '--model=logreg',
         '--num_clients=12', '--clients_per_round=6', '--total_rounds=2', '--rounds_per_eval=2', *flags]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))


@pytest.mark.parametrize('extra', [
    (),
    ('--straggler_model=fedprox', '--straggler_fraction=0.5', '--straggler_policy=partial',
     '--client_epochs_per_round=3'),
], ids=['plain', 'fedprox_stragglers'])
def test_binary_engine_flag(tmp_path, extra):
  summaries = {}
  for eng in ('tff', 'fast'):
    proc = _train(tmp_path, f'--engine={eng}', f'--experiment_name={eng}', '--algorithm=fedprox', '--mu=0.1', *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / eng / 'metrics.csv') as f:
      summaries[eng] = f.read().splitlines()
  header = summaries['tff'][0].split(',')
  assert header == summaries['fast'][0].split(',')
  assert ('regime/partial' in header) == bool(extra)
  for row_tff, row_fast in zip(summaries['tff'][1:], summaries['fast'][1:]):
    for name, a, b in zip(header, row_tff.split(','), row_fast.split(',')):
      if name.endswith('seconds') or not a:
        continue
      np.testing.assert_allclose(float(b), float(a), rtol=1e-4, err_msg=name)


@pytest.mark.parametrize('engine_flag, slots, algorithm, inputs, match', [
    ('bogus', 1, 'fedavg', None, '--engine must be one of tff, fast'),
    ('fast', 0, 'fedavg', None, '--engine_slots must be >= 1'),
    ('fast', 1, 'fedsgd', None, '--engine=fast runs --algorithm=fedavg or fedprox'),
    ('fast', 1, 'fedavg', lambda r, c: c, '--engine=fast cannot be combined'),  # e.g. label-flip attackers' inputs.
])
def test_engine_flag_validation(engine_flag, slots, algorithm, inputs, match):
  from experiments.components import engine as engine_component  # pylint: disable=g-import-not-at-top
  exp = types.SimpleNamespace(algo_cfg=types.SimpleNamespace(algorithm=algorithm), client_inputs_fn=inputs,
                              client_work_wrappers=[], process_builder=None, process_wrappers=[])
  with pytest.raises(ValueError, match=match):
    engine_component.validate(engine_flag, slots, exp)
  engine_component.validate('tff', 1, exp)  # The stock engine accepts any experiment.
