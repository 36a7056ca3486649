"""SecAgg on the packed engine: clients that drop after masking are recovered (the round's update equals the plain
mean of the reporting clients within the quantization error, on the default one-slot local round), and a round
with fewer than t survivors leaves the whole server state (model, momentum) unchanged."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks
from tff_fl.aggregators.secagg import factory
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import scaffold
from tff_fl.algorithms import secagg_input

COHORT = 8


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(task='digits', model='logreg', num_clients=20, seed=1))


def _process(task, aggregator, extensions=(), algorithm=None, slots=1):
  return engine.build_task_process(
      algorithm or fed_avg.FedAvg(), task, epochs=1, batch_size=10, seed=0, num_slots=slots,
      client_optimizer=tff.learning.optimizers.build_sgdm(0.1),
      server_optimizer=tff.learning.optimizers.build_sgdm(1.0, momentum=0.9), model_aggregator=aggregator,
      extensions=extensions, client_weighting=tff.learning.ClientWeighting.UNIFORM)


def _leaves(state):
  return [np.asarray(v) for v in tf.nest.flatten(state)]


@pytest.fixture(scope='module')
def processes(task):
  secagg = _process(task, factory.secagg_mean(24, 0.6, max_clients=COHORT, clip_range=1.0),
                    [secagg_input.SecAggInput(COHORT)])
  return secagg, _process(task, None)


def test_dropouts_after_masking_are_recovered(task, processes):
  secagg, plain = processes
  sampled = tuple(task.client_ids[:COHORT])
  reporting = sampled[:2] + sampled[4:]  # 2 of 8 drop; t = ceil(0.6 * 8) = 5 <= 6 survivors.
  cohort = engine.Cohort(1, reporting, (), sampled)
  out = secagg.next(secagg.set_model_weights(secagg.initialize(), task.initial_weights(1)), cohort)
  ref = plain.next(plain.set_model_weights(plain.initialize(), task.initial_weights(1)), cohort)
  m = out.metrics['aggregator']['secagg']
  assert (m['aborted'], m['survivors'], m['threshold'], m['sampled']) == (0, 6, 5, COHORT)
  got = _leaves(secagg.get_model_weights(out.state))
  want = _leaves(plain.get_model_weights(ref.state))
  moved = max(np.abs(w - w0).max() for w, w0 in zip(want, _leaves(task.initial_weights(1))))
  assert moved > 1e-3
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=1e-5)


def test_aborted_round_leaves_server_state_unchanged(task, processes):
  secagg, _ = processes
  sampled = tuple(task.client_ids[:COHORT])
  state = secagg.set_model_weights(secagg.initialize(), task.initial_weights(1))
  state = secagg.next(state, engine.Cohort.full(1, sampled)).state  # Momentum is now nonzero.
  before = _leaves(state)
  out = secagg.next(state, engine.Cohort(2, sampled[:4], (), sampled))  # 4 survivors < t = 5.
  assert out.metrics['aggregator']['secagg']['aborted'] == 1
  after = _leaves(out.state)
  assert len(before) == len(after)
  for b, a in zip(before, after):
    np.testing.assert_array_equal(b, a)
  assert out.client_ids == sampled[:4]  # Clients trained and their metrics are reported; nothing was applied.
  # The next round with enough survivors goes on from the same state.
  resumed = secagg.next(out.state, engine.Cohort(3, sampled[:6], (), sampled))
  assert resumed.metrics['aggregator']['secagg']['aborted'] == 0


def test_secagg_input_fields_place_reporters_among_the_sampled():
  ext = secagg_input.SecAggInput(6)
  fields = ext.fields(4, ['c', 'a'], ['a', 'b', 'c', 'd'])
  np.testing.assert_array_equal(fields['index'], [2, 0])
  np.testing.assert_array_equal(fields['n'], [4, 4])
  np.testing.assert_array_equal(fields['alive'], [[1, 0, 1, 0, 0, 0]] * 2)
  with pytest.raises(ValueError, match='at most 6 sampled'):
    ext.fields(4, ['a'], list('abcdefg'))


def test_aborted_round_keeps_the_clients_states(task):
  """SCAFFOLD under SecAgg: an aborted round writes no client state (the survivors' control variates stay as the
  previous round left them), while a completed round does change them."""
  process = _process(task, factory.secagg_mean(24, 0.6, max_clients=COHORT, clip_range=1.0),
                     [secagg_input.SecAggInput(COHORT)], algorithm=scaffold.Scaffold(0.1, 20))
  sampled = tuple(task.client_ids[:COHORT])
  state = process.set_model_weights(process.initialize(), task.initial_weights(1))
  state = process.next(state, engine.Cohort.full(1, sampled)).state
  before = process.client_states(sampled).copy()
  assert np.abs(before).max() > 0  # Round 1 completed: the clients' control variates moved.
  out = process.next(state, engine.Cohort(2, sampled[:4], (), sampled))  # 4 survivors < t = 5.
  assert out.metrics['aggregator']['secagg']['aborted'] == 1
  np.testing.assert_array_equal(process.client_states(sampled), before)
  done = process.next(out.state, engine.Cohort(3, sampled[:6], (), sampled))
  assert done.metrics['aggregator']['secagg']['aborted'] == 0
  assert np.abs(process.client_states(sampled[:6]) - before[:6]).max() > 0
