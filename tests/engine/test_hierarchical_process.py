"""HierarchicalProcess on the engine: reductions to stock TFF FedAvg and to plain engine FedAvg, two-level weighted
averages, persistence through a checkpoint and mixing vs numpy, SCAFFOLD at the edge vs numpy Algorithm 1 per
cluster, cohort splitting.

References: stock `tff.learning.algorithms.build_weighted_fed_avg` (also run one client at a time to get each
client's delta and example count, combined in numpy), the plain engine FedAvg round, and numpy SCAFFOLD.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import scaffold
from tff_fl.engine import hierarchical

from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py

LR, BATCH = 0.1, 16
sgd = tff.learning.optimizers.build_sgdm
UNIFORM = tff.learning.ClientWeighting.UNIFORM


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(num_clients=6, model='logreg', partition='dirichlet', seed=1))


@pytest.fixture(scope='module')
def edge(task):
  """Engine FedAvg with edge server SGD(1), the data order of `task.train_dataset(..., seed=0)`."""
  return engine.build_task_process(fed_avg.FedAvg(), task, epochs=1, batch_size=BATCH, seed=0,
                                   client_optimizer=sgd(LR))


@pytest.fixture(scope='module')
def stock(task):
  return tff.learning.algorithms.build_weighted_fed_avg(task.model_fn, client_optimizer_fn=sgd(LR),
                                                        server_optimizer_fn=sgd(1.0))


def _data(task, cids, round_num):
  return [task.train_dataset(c, epochs=1, batch_size=BATCH, seed=0, round_num=round_num) for c in cids]


def _flat(weights):
  return np.concatenate([np.ravel(w) for w in weights.trainable])


def _client_deltas(stock, start, datasets):
  """Each client alone through stock FedAvg (server SGD lr 1): (delta = start - result, examples)."""
  out = []
  for ds in datasets:
    res = stock.next(stock.set_model_weights(stock.initialize(), start), [ds])
    out.append((_flat(start) - _flat(stock.get_model_weights(res.state)),
                float(res.metrics['client_work']['train']['num_examples'])))
  return out


def _edge_average(start_flat, deltas):
  n = np.array([e for _, e in deltas])
  return start_flat - np.sum([d * e for d, e in deltas], axis=0) / n.sum(), n.sum()


def _halves(task):
  """Clients 0-2 in cluster 0, 3-5 in cluster 1."""
  return {c: int(i >= 3) for i, c in enumerate(task.client_ids)}


def test_one_cluster_every_round_no_mixing_equals_stock_fedavg(task, edge):
  server = sgd(0.5, momentum=0.9)
  ref = tff.learning.algorithms.build_weighted_fed_avg(task.model_fn, client_optimizer_fn=sgd(LR),
                                                       server_optimizer_fn=server)
  proc = hierarchical.HierarchicalProcess(edge, {c: 0 for c in task.client_ids}, 1, global_optimizer=server)
  w0 = task.initial_weights(0)
  ref_state, state = ref.set_model_weights(ref.initialize(), w0), proc.set_model_weights(proc.initialize(), w0)
  for r, cohort in ((1, task.client_ids[:3]), (2, task.client_ids[2:5])):
    ref_out = ref.next(ref_state, _data(task, cohort, r))
    out = proc.next(state, engine.Cohort.full(r, cohort))
    ref_state, state = ref_out.state, out.state
    np.testing.assert_allclose(_flat(proc.get_model_weights(state)), _flat(ref.get_model_weights(ref_state)),
                               rtol=1e-5, atol=1e-6)
    assert out.metrics['client_work']['train']['loss'] == pytest.approx(
        float(ref_out.metrics['client_work']['train']['loss']), rel=1e-5)
    assert out.client_ids == tuple(cohort)


def test_one_cluster_sgd1_equals_plain_engine_fedavg(task, edge):
  """K=1, global every round, mixing 0, global SGD(1): the plain engine round, stragglers included."""
  proc = hierarchical.HierarchicalProcess(edge, {c: 0 for c in task.client_ids}, 1, global_optimizer=sgd(1.0))
  w0 = task.initial_weights(0)
  ref_state, state = edge.set_model_weights(edge.initialize(), w0), proc.set_model_weights(proc.initialize(), w0)
  ids = task.client_ids
  cohorts = [engine.Cohort.full(1, ids[:4]), engine.Cohort(2, (ids[1], ids[4], ids[5]), (None, 3, None),
                                                           (ids[0], ids[1], ids[4], ids[5]))]
  for cohort in cohorts:
    ref_out, out = edge.next(ref_state, cohort), proc.next(state, cohort)
    ref_state, state = ref_out.state, out.state
    np.testing.assert_allclose(_flat(proc.get_model_weights(state)), _flat(edge.get_model_weights(ref_state)),
                               rtol=1e-6, atol=1e-7)
    assert out.client_ids == ref_out.client_ids == cohort.client_ids
    for got, want in zip(out.client_metrics, ref_out.client_metrics):
      assert got == pytest.approx(want)
  assert out.metrics['comm']['client_edge']['bytes_down'] == 4 * 4 * _flat(w0).size  # 4 sampled download.
  assert out.metrics['comm']['client_edge']['bytes_up'] == 3 * 4 * _flat(w0).size  # 3 report.


def test_two_level_average_persistence_and_mixing_vs_numpy(task, edge, stock):
  mixing = 0.3
  proc = hierarchical.HierarchicalProcess(edge, _halves(task), 2, global_every=2, cluster_mixing=mixing)
  w0 = task.initial_weights(0)
  state = proc.set_model_weights(proc.initialize(), w0)
  ids = task.client_ids
  cohorts = {1: [[ids[0], ids[1]], [ids[3], ids[4], ids[5]]], 2: [[ids[1], ids[2]], [ids[4]]]}
  # The process gets one cohort and splits it itself (interleaved here, so the split is not the input order).
  order = {1: [ids[3], ids[0], ids[4], ids[1], ids[5]], 2: [ids[4], ids[2], ids[1]]}

  # Round 1: edge rounds only; the global model is untouched, the cluster models are their clients' weighted means.
  examples = np.zeros(2)
  expected = []
  for k in range(2):
    model, n = _edge_average(_flat(w0), _client_deltas(stock, w0, _data(task, cohorts[1][k], 1)))
    expected.append(model)
    examples[k] += n
  out = proc.next(state, engine.Cohort.full(1, order[1]))
  assert out.metrics['hierarchy']['global_step'] == 0
  assert out.client_ids == tuple(order[1]) and len(out.client_metrics) == 5
  assert [out.metrics['cluster'][k]['clients'] for k in ('0', '1')] == [2, 3]
  np.testing.assert_array_equal(_flat(proc.get_model_weights(out.state)), _flat(w0))
  for k, w in enumerate(proc.cluster_model_weights(out.state)):
    np.testing.assert_allclose(_flat(w), expected[k], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.state['cluster_examples'], examples)

  # Round 2: edges continue from their own (persisted) cluster models, then the global step.
  clusters_r1 = proc.cluster_model_weights(out.state)
  for k in range(2):
    model, n = _edge_average(expected[k], _client_deltas(stock, clusters_r1[k], _data(task, cohorts[2][k], 2)))
    expected[k] = model
    examples[k] += n
  # Through a checkpoint (flattened leaves restored onto a fresh state, as CheckpointManager does).
  restored = tf.nest.pack_sequence_as(proc.initialize(), [np.asarray(v) for v in tf.nest.flatten(out.state)])
  out = proc.next(restored, engine.Cohort.full(2, order[2]))
  assert out.metrics['hierarchy']['global_step'] == 1
  global_ref = np.sum([e * m for e, m in zip(examples, expected)], axis=0) / examples.sum()
  np.testing.assert_allclose(_flat(proc.get_model_weights(out.state)), global_ref, rtol=1e-5, atol=1e-6)
  for k, w in enumerate(proc.cluster_model_weights(out.state)):
    np.testing.assert_allclose(_flat(w), mixing * expected[k] + (1 - mixing) * global_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out.state['cluster_examples'], 0.0)
  bytes_per_model = 4 * _flat(w0).size
  assert out.metrics['comm']['edge_global']['bytes_up'] == 2 * bytes_per_model
  assert out.metrics['comm']['client_edge']['bytes_up'] == 3 * bytes_per_model

  # Round 3: one cluster trains, no global step: the global model persists, the idle cluster model is unchanged.
  before = proc.cluster_model_weights(out.state)
  out3 = proc.next(out.state, engine.Cohort.full(3, [ids[5]]))
  np.testing.assert_array_equal(_flat(proc.get_model_weights(out3.state)), _flat(proc.get_model_weights(out.state)))
  np.testing.assert_array_equal(_flat(proc.cluster_model_weights(out3.state)[0]), _flat(before[0]))
  assert out3.metrics['hierarchy']['active_clusters'] == 1
  assert out3.metrics['cluster']['0'] == {'clients': 0}


def _numpy_hierarchical_scaffold(task, w0, cohorts, cluster_of, num_clusters, lr, n_total, mixing, global_every):
  """SCAFFOLD (Algorithm 1, option II, uniform averaging, server lr 1) at each edge with its own c and model; the
  global step: uniform mean of the active clusters' models (global SGD 1), then mixing."""
  g = [p.astype(np.float64) for p in w0.trainable]
  models = [[p.copy() for p in g] for _ in range(num_clusters)]
  cs = [[np.zeros_like(p) for p in g] for _ in range(num_clusters)]
  c_i, active = {}, np.zeros(num_clusters, bool)
  for r, cohort in enumerate(cohorts, 1):
    for k in range(num_clusters):
      mine = [cid for cid in cohort if cluster_of[cid] == k]
      if not mine:
        continue
      x, c, dys, dcs = models[k], cs[k], [], []
      for cid in mine:
        xs, ys = task.data.train[cid]
        order = task.train_order(cid, epochs=1, seed=0, round_num=r)
        xs, ys = xs[order].reshape(len(order), -1).astype(np.float64), ys[order]
        ci = c_i.get(cid, [np.zeros_like(p) for p in g])
        y, steps = [p.copy() for p in x], 0
        for s in range(0, len(xs), BATCH):
          grads = logreg_loss_and_grads(y[0], y[1], xs[s:s + BATCH], ys[s:s + BATCH])[1:]
          y = [p - lr * (gk - cik + ck) for p, gk, cik, ck in zip(y, grads, ci, c)]
          steps += 1
        new_ci = [cik - ck + (xk - yk) / (steps * lr) for cik, ck, xk, yk in zip(ci, c, x, y)]
        dys.append([yk - xk for yk, xk in zip(y, x)])
        dcs.append([a - b for a, b in zip(new_ci, ci)])
        c_i[cid] = new_ci
      models[k] = [xk + np.mean([d[j] for d in dys], axis=0) for j, xk in enumerate(x)]
      cs[k] = [ck + np.sum([d[j] for d in dcs], axis=0) / n_total for j, ck in enumerate(c)]
      active[k] = True
    if r % global_every == 0:
      g = [np.mean([models[k][j] for k in np.flatnonzero(active)], axis=0) for j in range(len(g))]
      models = [[mixing * m + (1 - mixing) * gj for m, gj in zip(models[k], g)] for k in range(num_clusters)]
      active[:] = False
  return g, models, cs, c_i


def test_scaffold_at_the_edge_matches_numpy_per_cluster(task):
  """--algorithm-style definition SCAFFOLD(lr, N) at every edge: 2 clusters, 2 rounds, global step after round 2."""
  mixing, n_total = 0.25, len(task.client_ids)
  edge = engine.build_task_process(scaffold.Scaffold(LR, n_total), task, epochs=1, batch_size=BATCH, seed=0,
                                   client_optimizer=sgd(LR), client_weighting=UNIFORM)
  cluster_of = _halves(task)
  proc = hierarchical.HierarchicalProcess(edge, cluster_of, 2, global_every=2, cluster_mixing=mixing,
                                          cluster_weighting='uniform')
  ids = task.client_ids
  cohorts = [[ids[0], ids[3], ids[4]], [ids[0], ids[1], ids[4]]]  # Clients 0 and 4 return with their c_i.
  w0 = task.initial_weights(0)
  state = proc.set_model_weights(proc.initialize(), w0)
  for r, cohort in enumerate(cohorts, 1):
    out = proc.next(state, engine.Cohort.full(r, cohort))
    state = out.state
  want_g, want_models, want_c, want_ci = _numpy_hierarchical_scaffold(task, w0, cohorts, cluster_of, 2, LR, n_total,
                                                                      mixing, 2)
  for got, want in zip(proc.get_model_weights(state).trainable, want_g):
    np.testing.assert_allclose(got, want, atol=2e-5)
  for k in range(2):
    for got, want in zip(proc.cluster_model_weights(state)[k].trainable, want_models[k]):
      np.testing.assert_allclose(got, want, atol=2e-5)
    for got, want in zip(state['clusters'][k]['extra'], want_c[k]):
      np.testing.assert_allclose(got, want, atol=2e-5)
  for cid, vector in zip(want_ci, proc.store.get_many(list(want_ci))):
    for got, want in zip(proc.client_state_structure(vector)['control'], want_ci[cid]):
      np.testing.assert_allclose(got, want, atol=2e-5)
  assert np.max(np.abs(want_c[1][0])) > 1e-3 and np.max(np.abs(want_c[0][0] - want_c[1][0])) > 1e-3


def test_split_keeps_steps_and_sampled_per_cluster(task, edge):
  proc = hierarchical.HierarchicalProcess(edge, _halves(task), 2)
  ids = task.client_ids
  cohort = engine.Cohort(4, (ids[4], ids[0]), (2, None), (ids[4], ids[1], ids[0], ids[5]))
  first, second = proc.split(cohort)
  assert (first.client_ids, first.steps, first.sampled) == ((ids[0],), (None,), (ids[1], ids[0]))
  assert (second.client_ids, second.steps, second.sampled) == ((ids[4],), (2,), (ids[4], ids[5]))
  with pytest.raises(ValueError, match="client 'nobody' has no cluster"):
    proc.split(engine.Cohort.full(1, ['nobody']))


@pytest.mark.parametrize('kwargs, match', [(dict(global_every=0), '^global_every must be >= 1'),
                                           (dict(cluster_mixing=1.0), r'^cluster_mixing must be in \[0, 1\)'),
                                           (dict(cluster_weighting='1,2,3'), '^cluster_weighting must be')])
def test_bad_arguments(task, edge, kwargs, match):
  with pytest.raises(ValueError, match=match):
    hierarchical.HierarchicalProcess(edge, _halves(task), 2, **kwargs)
  with pytest.raises(ValueError, match='^cluster_of must map clients to clusters 0..0; got cluster 1'):
    hierarchical.HierarchicalProcess(edge, _halves(task), 1)
