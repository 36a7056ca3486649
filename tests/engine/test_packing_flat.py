"""The Packer's vectorised path over a `FlatSplit` packs exactly the tensors of its per-client path over the same
clients as a dict, and a round on the flat population gives the dict population's weights."""

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import fed_avg
from tff_fl.data import client_data
from tff_fl.engine import packing


def _population():
  task = tasks.build_task(tasks.TaskConfig(task='digits_population', num_clients=200, examples_per_client=6, seed=2))
  ids = list(task.client_ids)
  as_dicts = client_data.FederatedArrays(ids, {c: task.data.train[c] for c in ids},
                                         {c: task.data.test[c] for c in ids}, task.data.num_classes)
  return task, tasks.Task(task.name, as_dicts, task.model_name, task.input_shape, task.num_classes)


def _assert_same_slots(a, b):
  assert len(a) == len(b)
  for sa, sb in zip(a, b):
    assert list(sa) == list(sb)
    for k in ('x', 'y', 'n', 'order', 'seed', 'state'):
      assert sa[k].dtype == sb[k].dtype, k
      np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_flat_packing_equals_the_per_client_packing():
  flat, ref = _population()
  rng = np.random.default_rng(0)

  def order_fn(cid, r):  # Repeats, skipped rows and unsorted orders: the general case of client_order extensions.
    n = flat.data.train.num_examples_of(cid)
    return np.random.default_rng([r, int(cid)]).integers(0, n, size=1 + (int(cid) + r) % 13)

  ids = [flat.client_ids[i] for i in np.sort(rng.choice(200, 23, replace=False))]
  steps = tuple(None if i % 4 else 1 for i in range(len(ids)))  # Stragglers: only their first batch.
  cohort = engine.Cohort(5, tuple(ids), steps)
  make = lambda task: packing.Packer(task.data.train, order_fn, batch_size=3, seed=4, num_slots=3)
  flat_slots, ref_slots = make(flat).pack(cohort), make(ref).pack(cohort)
  _assert_same_slots(flat_slots, ref_slots)
  rows = [s['x'][c][s['order'][c, :n]] for s in flat_slots for c, n in enumerate(s['n'])]
  for cid, x, st in zip(ids, rows, steps):  # Independent of both packers: the client's rows in order_fn order.
    order = order_fn(cid, 5)[:None if st is None else 3 * st]
    np.testing.assert_array_equal(x, flat.data.train[cid][0][order])


def test_empty_and_single_client_cohorts():
  flat, ref = _population()
  order_fn = lambda cid, r: flat.train_order(cid, epochs=2, seed=0, round_num=r)
  for ids in ([], [flat.client_ids[7]]):
    cohort = engine.Cohort.full(1, ids)
    _assert_same_slots(packing.Packer(flat.data.train, order_fn, batch_size=4).pack(cohort),
                       packing.Packer(ref.data.train, order_fn, batch_size=4).pack(cohort))


def test_round_on_flat_population_equals_dict_population():
  flat, ref = _population()

  def run(task):
    process = engine.build_task_process(fed_avg.FedAvg(), task, epochs=2, batch_size=4, seed=0,
                                        client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=0.1))
    state = process.set_model_weights(process.initialize(), task.initial_weights(0))
    for r in (1, 2):
      state = process.next(state, engine.Cohort.full(r, task.client_ids[10 * r:10 * r + 15])).state
    return [np.asarray(w) for w in tf.nest.flatten(process.get_model_weights(state))]

  got, want = run(flat), run(ref)
  assert max(float(np.abs(a - b).max()) for a, b in zip(want, tf.nest.flatten(flat.initial_weights(0)))) > 1e-3
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)
