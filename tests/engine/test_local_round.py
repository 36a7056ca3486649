"""The in-process round (`runtime='local'`) equals the same federated round run by TFF's runtime (`runtime='tff'`):
model, algorithm extra, aggregator/finalizer/extension states, metrics, per-client metrics and client states, over
rounds with different cohorts (of 5 clients, run with the slot size static, and of 6, dynamic); for a robust aggregator chain, Krum, a stateful algorithm, a server-side extension
(pruning) and an extension with an aggregate pass (drift)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import aggregators
from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import attacks
from tff_fl.algorithms import ditto
from tff_fl.algorithms import drift
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import pruning
from tff_fl.algorithms import scaffold
from tff_fl.engine import local_round

COHORTS = [(0, 3, 5, 6, 7), (1, 3, 4, 2, 6), (2, 5, 6, 7, 0, 1)]  # Client indices.


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(task='digits', model='logreg', num_clients=8, seed=3))


def _run(task, runtime, algorithm, **kwargs):
  process = engine.build_task_process(algorithm, task, epochs=1, batch_size=8, seed=0, runtime=runtime,
                                      client_optimizer=tff.learning.optimizers.build_sgdm(0.1), **kwargs)
  assert process.runtime == runtime
  state = process.set_model_weights(process.initialize(), task.initial_weights(0))
  outputs = []
  for r, cohort in enumerate(COHORTS, start=1):
    out = process.next(state, engine.Cohort.full(r, [task.client_ids[i] for i in cohort]))
    state = out.state
    outputs.append(out)
  if runtime == 'local':  # Rounds 1-2 ran the function traced for 5 clients, round 3 the one of any size.
    assert process._round._static_size == len(COHORTS[0])  # pylint: disable=protected-access
  return state, outputs, process.client_states(task.client_ids)


def _leaves(structure):
  return [np.asarray(v, np.float64) for v in tf.nest.flatten(structure)]


@pytest.mark.parametrize('case', ['robust_chain', 'krum', 'scaffold', 'ditto', 'pruning', 'drift_attack'])
def test_local_round_equals_tff_runtime(task, case):
  kwargs = {}
  algorithm = fed_avg.FedAvg()
  if case == 'robust_chain':
    kwargs['model_aggregator'] = aggregators.build_aggregator('clip(0.5)>median', cohort_size=5)
  elif case == 'krum':  # Its server part runs TF1 control flow (tf.map_fn) next to asserts.
    kwargs['model_aggregator'] = aggregators.build_aggregator('krum(1)', cohort_size=5)
  elif case == 'scaffold':
    algorithm = scaffold.Scaffold(0.5, 8)
  elif case == 'ditto':
    algorithm = ditto.Ditto(0.3)
  elif case == 'pruning':
    kwargs['extensions'] = [pruning.Pruning(task.keras_model, pruning.build_schedule('constant', final_sparsity=0.5))]
  else:
    kwargs['extensions'] = [attacks.ByzantineAttack('sign_flip', 0.5, seed=0), drift.DriftMeasurements()]
  local_state, local_out, local_states = _run(task, 'local', algorithm, **kwargs)
  tff_state, tff_out, tff_states = _run(task, 'tff', algorithm, **kwargs)

  tf.nest.assert_same_structure(local_state, tff_state)
  assert type(local_state['model']) is type(tff_state['model'])  # pylint: disable=unidiomatic-typecheck
  for a, b in zip(_leaves(local_state), _leaves(tff_state)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  moved = np.abs(_leaves(local_state['model'])[0] - np.asarray(task.initial_weights(0).trainable[0])).max()
  assert moved > 1e-3
  np.testing.assert_allclose(local_states, tff_states, rtol=0, atol=1e-6)
  for lo, to in zip(local_out, tff_out):
    assert lo.client_ids == to.client_ids
    tf.nest.assert_same_structure(lo.metrics, to.metrics)
    for a, b in zip(_leaves(lo.metrics), _leaves(to.metrics)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert [list(m) for m in lo.client_metrics] == [list(m) for m in to.client_metrics]
    for lm, tm in zip(lo.client_metrics, to.client_metrics):
      np.testing.assert_allclose(list(lm.values()), list(tm.values()), rtol=1e-5, atol=1e-6)


def test_runtime_arguments(task):
  opt = tff.learning.optimizers.build_sgdm(0.1)
  build = lambda **kw: engine.build_task_process(fed_avg.FedAvg(), task, epochs=1, batch_size=8, seed=0,
                                                 client_optimizer=opt, **kw)
  assert engine.process.resolve_runtime(None, 1) == 'local'
  assert engine.process.resolve_runtime(None, 2) == 'tff'
  assert build(num_slots=2).runtime == 'tff'
  with pytest.raises(ValueError, match="runtime='local' runs one slot"):
    build(num_slots=2, runtime='local')
  with pytest.raises(ValueError, match='runtime must be one of'):
    build(runtime='remote')


def test_conform_matches_fields_by_name():
  spec = tff.learning.models.ModelWeights(trainable=[tf.TensorSpec([2])], non_trainable=[])
  value = {'non_trainable': [], 'trainable': [np.ones(2)]}  # A plain dict flattens in sorted-key order.
  out = local_round.conform(value, spec)
  assert isinstance(out, tff.learning.models.ModelWeights)
  np.testing.assert_array_equal(out.trainable[0], np.ones(2))
