"""Every stateless definition runs two ways that agree: on the packed engine and as its stock TFF export
(`stock.build_learning_process`, a `tff.learning.templates.LearningProcess` run by TFF's runtime on tf.data), after
3 rounds, with the default mean and with an aggregator chain (clipping inside zeroing)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import fed_sgd
from tff_fl.algorithms import fednova
from tff_fl.algorithms import stock
from tff_fl.simulation import stock_process
from tff_fl.simulation import training_loop

EPOCHS, BATCH, ROUNDS = 2, 5, 3
ALGORITHMS = {
    'fedavg': fed_avg.FedAvg(),
    'fedprox': fed_avg.FedAvg(proximal_mu=0.3),
    'fedsgd': fed_sgd.FedSGD(),
    'fednova': fednova.FedNova(0.05, client_momentum=0.5),
}


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(task='digits', model='logreg', num_clients=12, seed=2))


def _chain():
  return tff.aggregators.zeroing_factory(10.0, tff.aggregators.clipping_factory(0.5, tff.aggregators.MeanFactory()))


def _weights(process, task):
  state = process.set_model_weights(process.initialize(), task.initial_weights(2))
  for r in range(1, ROUNDS + 1):
    state = process.next(state, engine.Cohort.full(r, task.client_ids[r:r + 4])).state
  return [np.asarray(w) for w in tf.nest.flatten(process.get_model_weights(state))]


@pytest.mark.parametrize('chain', [False, True], ids=['mean', 'chain'])
@pytest.mark.parametrize('name', list(ALGORITHMS))
def test_packed_equals_stock_export(task, name, chain):
  if name == 'fednova' and chain:
    pytest.skip("the chain's norm stages see FedNova's `steps` entry (zeroing at 10 zeroes every update): "
                'not a meaningful pair (see tff_fl/algorithms/fednova.py)')
  algorithm = ALGORITHMS[name]
  client = tff.learning.optimizers.build_sgdm(learning_rate=0.05)
  server = tff.learning.optimizers.build_sgdm(learning_rate=0.8, momentum=0.5)
  kwargs = dict(model_aggregator=_chain() if chain else None)
  learning_process = stock.build_learning_process(algorithm, task.model_fn, client, server, **kwargs)
  assert isinstance(learning_process, tff.learning.templates.LearningProcess)
  cfg = training_loop.LoopConfig(client_epochs_per_round=EPOCHS, client_batch_size=BATCH, seed=0)
  ref = _weights(stock_process.StockProcess(learning_process, task, cfg), task)
  packed = engine.build_task_process(algorithm, task, epochs=EPOCHS, batch_size=BATCH, seed=0, num_slots=2,
                                     client_optimizer=client, server_optimizer=server, **kwargs)
  got = _weights(packed, task)
  assert max(np.max(np.abs(g - w)) for g, w in zip(got, task.initial_weights(2).trainable)) > 1e-3
  for g, r in zip(got, ref):
    np.testing.assert_allclose(g, r, rtol=0, atol=1e-5)
