"""The packed engine gives the weights and metrics of the reference paths: stock TFF FedAvg, and the stock export
of our definitions (FedProx, aggregator chains) on tf.data client datasets, on the same initial weights and data
order; stragglers' partial work and empty cohorts; the binary's two engines agree."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import stock
from tff_fl.simulation import stock_process
from tff_fl.simulation import training_loop

import train_binary  # tests/train_binary.py: the binary in this process

EPOCHS, BATCH = 2, 10


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(task='digits', model='2nn', num_clients=30, seed=1))


def _cohorts(task, rounds, size, steps=None):
  return [engine.Cohort(r, tuple(task.client_ids[r:r + size]), tuple(steps or ())) for r in range(1, rounds + 1)]


def _run(process, cohorts, task):
  state = process.set_model_weights(process.initialize(), task.initial_weights(1))
  metrics = []
  for cohort in cohorts:
    output = process.next(state, cohort)
    state = output.state
    metrics.append(output.metrics)
  return [np.asarray(w) for w in tf.nest.flatten(process.get_model_weights(state))], metrics


def _stock(learning_process, task):
  cfg = training_loop.LoopConfig(client_epochs_per_round=EPOCHS, client_batch_size=BATCH, seed=0)
  return stock_process.StockProcess(learning_process, task, cfg)


def _packed(algorithm, task, slots=1, **kwargs):
  kwargs.setdefault('client_optimizer', tff.learning.optimizers.build_sgdm(learning_rate=0.1))
  return engine.build_task_process(algorithm, task, epochs=EPOCHS, batch_size=BATCH, seed=0, num_slots=slots,
                                   **kwargs)


def _assert_close(a, b, tol=1e-5):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=0, atol=tol)


def test_packing_reproduces_train_dataset_order(task):
  cohort = engine.Cohort.full(7, task.client_ids[:4])
  packer = engine.packing.Packer(task.data.train, lambda c, r: task.train_order(c, epochs=EPOCHS, seed=0,
                                                                                round_num=r),
                                 batch_size=BATCH, num_slots=3)
  slots = packer.pack(cohort)
  assert [len(s['n']) for s in slots] == [1, 2, 1]
  rows = [(s['x'][c][s['order'][c, :n]], s['y'][c][s['order'][c, :n]]) for s in slots for c, n in enumerate(s['n'])]
  for s in slots:  # Each distinct example is shipped once, however many epochs address it.
    assert s['order'].shape[1] == EPOCHS * s['x'].shape[1]
  for cid, (x, y) in zip(cohort.client_ids, rows):
    batches = list(task.train_dataset(cid, epochs=EPOCHS, batch_size=BATCH, seed=0, round_num=7).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([b['x'] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b['y'] for b in batches]), y)


def test_fed_avg_matches_stock_tff(task):
  opt = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  stock_tff = tff.learning.algorithms.build_weighted_fed_avg(task.model_fn, client_optimizer_fn=opt)
  ref_w, ref_m = _run(_stock(stock_tff, task), _cohorts(task, 2, 5), task)
  fast_w, fast_m = _run(_packed(fed_avg.FedAvg(), task, slots=2), _cohorts(task, 2, 5), task)
  assert max(float(np.max(np.abs(w - w0))) for w, w0 in zip(fast_w, task.initial_weights(1).trainable)) > 1e-2
  _assert_close(fast_w, ref_w)
  for fast, ref in zip(fast_m, ref_m):
    f, r = fast['client_work']['train'], ref['client_work']['train']
    assert f['num_examples'] == r['num_examples'] and f['num_batches'] == r['num_batches']
    np.testing.assert_allclose(f['loss'], r['loss'], rtol=1e-5)
    np.testing.assert_allclose(f['sparse_categorical_accuracy'], r['sparse_categorical_accuracy'], rtol=1e-6)


def test_fed_prox_uniform_momentum_server_matches_stock_export(task):
  weighting = tff.learning.ClientWeighting.UNIFORM
  client = tff.learning.optimizers.build_sgdm(learning_rate=0.05, momentum=0.9)
  server = tff.learning.optimizers.build_sgdm(learning_rate=0.7, momentum=0.5)
  algorithm = fed_avg.FedAvg(proximal_mu=0.5)
  ref = stock.build_learning_process(algorithm, task.model_fn, client, server, client_weighting=weighting)
  ref_w, _ = _run(_stock(ref, task), _cohorts(task, 2, 5), task)
  fast_w, _ = _run(_packed(algorithm, task, client_optimizer=client, server_optimizer=server,
                           client_weighting=weighting), _cohorts(task, 2, 5), task)
  _assert_close(fast_w, ref_w)


def test_partial_work_and_empty_cohorts_match_stock(task):
  """A straggler's partial work (its first `steps` batches) is cut in packing exactly as `dataset.take(steps)`;
  a round in which nobody reports leaves the model unchanged on both engines."""
  opt = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  cohorts = [engine.Cohort(1, tuple(task.client_ids[:4]), (None, 1, 3, None)),
             engine.Cohort(2, (), ()), engine.Cohort(3, tuple(task.client_ids[4:6]), (2, None))]
  ref_w, ref_m = _run(_stock(fed_avg.build_fed_prox(task.model_fn, opt, proximal_mu=0.5), task), cohorts[:1], task)
  fast_w, fast_m = _run(_packed(fed_avg.FedAvg(0.5), task, slots=2), cohorts[:1], task)
  _assert_close(fast_w, ref_w)
  assert fast_m[0]['client_work']['train']['num_batches'] == ref_m[0]['client_work']['train']['num_batches']
  process = _packed(fed_avg.FedAvg(0.5), task, slots=2)
  state = process.set_model_weights(process.initialize(), task.initial_weights(1))
  before = process.get_model_weights(state)
  empty = process.next(state, cohorts[1])
  _assert_close(tf.nest.flatten(process.get_model_weights(empty.state)), tf.nest.flatten(before), tol=0)
  assert empty.client_ids == () and empty.metrics['client_work']['train']['num_examples'] == 0


def test_aggregator_chain_runs_per_client(task):
  """Adaptive clipping (per-client clip, quantile state) inside zeroing: the clip counts and the evolving
  clip norm only match if every packed client goes through the chain on its own."""
  def factory():
    return tff.aggregators.zeroing_factory(
        5.0, tff.aggregators.clipping_factory(
            tff.aggregators.PrivateQuantileEstimationProcess.no_noise(1.0, learning_rate=0.2, target_quantile=0.5),
            tff.aggregators.MeanFactory()))
  opt = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  ref_w, ref_m = _run(_stock(fed_avg.build_fed_avg(task.model_fn, opt, model_aggregator=factory()), task),
                      _cohorts(task, 3, 5), task)
  fast_w, fast_m = _run(_packed(fed_avg.FedAvg(), task, slots=2, model_aggregator=factory()), _cohorts(task, 3, 5),
                        task)
  _assert_close(fast_w, ref_w)
  clipped = [m['aggregator']['zeroing']['clipped_count'] for m in fast_m]
  assert clipped == [m['aggregator']['zeroing']['clipped_count'] for m in ref_m]
  assert 0 < sum(clipped) < 15  # Some, not all, clients were clipped: a per-client decision.
  norms = [m['aggregator']['zeroing']['clipping_norm'] for m in fast_m]
  np.testing.assert_allclose(norms, [m['aggregator']['zeroing']['clipping_norm'] for m in ref_m], rtol=1e-6)
  assert len(set(np.round(norms, 6))) == 3  # The adaptive clip norm (aggregator state) moved every round.


def test_bad_arguments_raise(task):
  with pytest.raises(ValueError, match='batch_size'):
    engine.build_task_process(fed_avg.FedAvg(), task, epochs=1, batch_size=0, seed=0,
                              client_optimizer=tff.learning.optimizers.build_sgdm(0.1))
  with pytest.raises(ValueError, match='proximal_mu'):
    _packed(fed_avg.FedAvg(-1.0), task)
  with pytest.raises(ValueError, match='num_slots'):
    _packed(fed_avg.FedAvg(), task, slots=0)
  with pytest.raises(TypeError, match='Cohort'):
    process = _packed(fed_avg.FedAvg(), task)
    process.next(process.initialize(), [task.client_ids[0]])


def _train(out_dir, *flags):
  return train_binary.run(f'--root_output_dir={out_dir}', '--task=digits', '--model=logreg', '--num_clients=12',
                          '--clients_per_round=6', '--total_rounds=2', '--rounds_per_eval=2', *flags)


@pytest.mark.parametrize('extra', [
    (),
    ('--straggler_model=fedprox', '--straggler_fraction=0.5', '--straggler_policy=partial',
     '--client_epochs_per_round=3'),
], ids=['plain', 'fedprox_stragglers'])
def test_binary_engines_agree(tmp_path, extra):
  summaries = {}
  for eng in ('tff', 'packed'):
    proc = _train(tmp_path, f'--engine={eng}', f'--experiment_name={eng}', '--algorithm=fedprox', '--mu=0.1', *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / eng / 'metrics.csv') as f:
      summaries[eng] = f.read().splitlines()
  header = summaries['tff'][0].split(',')
  assert header == summaries['packed'][0].split(',')
  assert ('regime/partial' in header) == bool(extra)
  for row_tff, row_fast in zip(summaries['tff'][1:], summaries['packed'][1:]):
    for name, a, b in zip(header, row_tff.split(','), row_fast.split(',')):
      if name.endswith('seconds') or not a:
        continue
      np.testing.assert_allclose(float(b), float(a), rtol=1e-4, err_msg=name)


@pytest.mark.parametrize('flags, match', [
    (('--engine=bogus',), "^error: --engine must be one of packed, tff; got 'bogus'.$"),
    (('--engine_slots=0',), '^error: --engine_slots must be >= 1; got 0.$'),
    (('--engine=tff', '--algorithm=scaffold'), '^error: --engine=tff runs stateless algorithms'),
    (('--aggregator=secure(16)>mean',), '^error: --aggregator / --dp: model_aggregator broadcasts an aggregate'),
])
def test_engine_flag_validation(tmp_path, flags, match):
  proc = _train(tmp_path, '--experiment_name=bad', *flags)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert len(proc.stderr.strip().splitlines()) == 1
  assert __import__('re').search(match, proc.stderr.strip()), proc.stderr


@pytest.mark.parametrize('spec', ['median', 'clip(0.5)>trimmed_mean(0.2)', 'krum(1)'])
def test_robust_aggregators_match_stock_export(task, spec):
  """Robust aggregators gather each client's row (an accumulator that grows with the clients) across slots."""
  from tff_fl import aggregators  # pylint: disable=g-import-not-at-top
  opt = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  ref = fed_avg.build_fed_avg(task.model_fn, opt, model_aggregator=aggregators.build_aggregator(spec, cohort_size=6))
  ref_w, _ = _run(_stock(ref, task), _cohorts(task, 2, 6), task)
  fast_w, _ = _run(_packed(fed_avg.FedAvg(), task, slots=2,
                           model_aggregator=aggregators.build_aggregator(spec, cohort_size=6)), _cohorts(task, 2, 6), task)
  _assert_close(fast_w, ref_w)


def test_secure_sums_run_and_two_pass_aggregators_are_refused(task):
  from tff_fl.aggregators import secure  # pylint: disable=g-import-not-at-top
  opt = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  factory = lambda: tff.aggregators.MeanFactory(value_sum_factory=secure.secure_sum(16, 2.0))
  ref_w, ref_m = _run(_stock(fed_avg.build_fed_avg(task.model_fn, opt, model_aggregator=factory()), task),
                      _cohorts(task, 1, 6), task)
  fast_w, fast_m = _run(_packed(fed_avg.FedAvg(), task, slots=2, model_aggregator=factory()), _cohorts(task, 1, 6),
                        task)
  # Stochastic rounding draws differ between the two runs: equal up to the 16-bit quantization step.
  _assert_close(fast_w, ref_w, tol=2e-3)
  assert fast_m[0]['aggregator']['mean_value']['bits_per_client'] == ref_m[0]['aggregator']['mean_value'][
      'bits_per_client']
  with pytest.raises(ValueError, match='^model_aggregator broadcasts an aggregate back to the clients'):
    _packed(fed_avg.FedAvg(), task, model_aggregator=secure.secure_mean(16, 1.0))
