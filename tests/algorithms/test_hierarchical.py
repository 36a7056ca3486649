"""Hierarchical FL: reduction to stock FedAvg, two-level weighted averages and mixing vs numpy, persistence, clustering.

References: stock `tff.learning.algorithms.build_weighted_fed_avg` (also run one client at a time to get each client's
delta and example count, combined in numpy), and planted label groups for clustering.
"""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_fl import tasks
from tff_fl.algorithms import hierarchical
from tff_fl.data import client_data

LR = 0.1


@pytest.fixture(scope='module')
def task():
  return tasks.build_task(tasks.TaskConfig(num_clients=6, model='logreg', partition='dirichlet', seed=1))


@pytest.fixture(scope='module')
def stock(task):
  return tff.learning.algorithms.build_weighted_fed_avg(
      task.model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(LR),
      server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0))


def _data(task, cids, round_num):
  return [task.train_dataset(c, epochs=1, batch_size=16, seed=0, round_num=round_num) for c in cids]


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


def test_one_cluster_every_round_no_mixing_equals_stock_fedavg(task):
  server = tff.learning.optimizers.build_sgdm(0.5, momentum=0.9)
  ref = tff.learning.algorithms.build_weighted_fed_avg(
      task.model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(LR), server_optimizer_fn=server)
  proc = hierarchical.HierarchicalProcess(task.model_fn, tff.learning.optimizers.build_sgdm(LR), 1,
                                          global_optimizer=server)
  w0 = task.initial_weights(0)
  ref_state, state = ref.set_model_weights(ref.initialize(), w0), proc.set_model_weights(proc.initialize(), w0)
  for r, cohort in ((1, task.client_ids[:3]), (2, task.client_ids[2:5])):
    ref_out = ref.next(ref_state, _data(task, cohort, r))
    out = proc.next(state, [_data(task, cohort, r)])
    ref_state, state = ref_out.state, out.state
    np.testing.assert_allclose(_flat(proc.get_model_weights(state)), _flat(ref.get_model_weights(ref_state)),
                               rtol=1e-5, atol=1e-6)
    assert out.metrics['client_work']['train']['loss'] == pytest.approx(
        float(ref_out.metrics['client_work']['train']['loss']), rel=1e-5)


def test_two_level_average_persistence_and_mixing_vs_numpy(task, stock):
  mixing = 0.3
  proc = hierarchical.HierarchicalProcess(task.model_fn, tff.learning.optimizers.build_sgdm(LR), 2, global_every=2,
                                          cluster_mixing=mixing)
  w0 = task.initial_weights(0)
  state = proc.set_model_weights(proc.initialize(), w0)
  ids = task.client_ids
  cohorts = {1: [[ids[0], ids[1]], [ids[3], ids[4], ids[5]]], 2: [[ids[1], ids[2]], [ids[4]]]}

  # Round 1: edge rounds only; the global model is untouched, the cluster models are their clients' weighted means.
  examples = np.zeros(2)
  expected = []
  for k in range(2):
    model, n = _edge_average(_flat(w0), _client_deltas(stock, w0, _data(task, cohorts[1][k], 1)))
    expected.append(model)
    examples[k] += n
  out = proc.next(state, [_data(task, c, 1) for c in cohorts[1]])
  assert out.metrics['hierarchy']['global_step'] == 0
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
  out = proc.next(out.state, [_data(task, c, 2) for c in cohorts[2]])
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
  out3 = proc.next(out.state, [[], _data(task, [ids[5]], 3)])
  np.testing.assert_array_equal(_flat(proc.get_model_weights(out3.state)), _flat(proc.get_model_weights(out.state)))
  np.testing.assert_array_equal(_flat(proc.cluster_model_weights(out3.state)[0]), _flat(before[0]))
  assert out3.metrics['hierarchy']['active_clusters'] == 1


def test_cluster_weights_user_vector_and_activity():
  proc = hierarchical.HierarchicalProcess.__new__(hierarchical.HierarchicalProcess)
  proc.cluster_weighting = hierarchical.parse_cluster_weighting('1,3,2', 3)
  np.testing.assert_array_equal(proc.cluster_weights(np.array([5.0, 0.0, 7.0])), [1.0, 0.0, 2.0])
  proc.cluster_weighting = 'uniform'
  np.testing.assert_array_equal(proc.cluster_weights(np.array([5.0, 0.0, 7.0])), [1.0, 0.0, 1.0])
  for bad in ('1,2', 'a,b,c', '-1,1,1', '0,0,0'):
    with pytest.raises(ValueError, match='--cluster_weighting'):
      hierarchical.parse_cluster_weighting(bad, 3)


@pytest.mark.parametrize('kwargs, flag', [(dict(global_every=0), '--global_every'),
                                          (dict(cluster_mixing=1.0), '--cluster_mixing')])
def test_bad_arguments(task, kwargs, flag):
  with pytest.raises(ValueError, match=flag):
    hierarchical.HierarchicalProcess(task.model_fn, tff.learning.optimizers.build_sgdm(LR), 2, **kwargs)


def test_natural_clusters_from_ids():
  ids = ['b/1', 'a/2', 'b/3', 'c/0']
  np.testing.assert_array_equal(hierarchical.natural_clusters(ids, 3), [1, 0, 1, 2])
  with pytest.raises(ValueError, match='--num_clusters'):
    hierarchical.natural_clusters(ids, 2)
  with pytest.raises(ValueError, match='--cluster_by=natural'):
    hierarchical.natural_clusters(['client_0000'], 1)


def test_label_kmeans_recovers_planted_groups():
  rng = np.random.default_rng(0)
  arrays, planted = {}, []
  for i in range(12):
    group = i % 3
    labels = rng.choice([3 * group, 3 * group + 1, 3 * group + 2], size=30)
    arrays[f'client_{i:02d}'] = (rng.random((30, 4)).astype(np.float32), labels)
    planted.append(group)
  fed = client_data.from_client_arrays(arrays, test_fraction=0.0, seed=0, num_classes=9)
  task = tasks.Task('planted', fed, 'logreg', (4,), 9)
  found = hierarchical.assign_clusters('labels', task, 3, seed=0)
  pairs = collections.Counter(zip(planted, found.tolist()))
  assert len(pairs) == 3 and sorted(pairs.values()) == [4, 4, 4]  # A bijection between planted and found groups.
  with pytest.raises(ValueError, match='--cluster_by'):
    hierarchical.assign_clusters('regions', task, 3, seed=0)


def test_cluster_accuracy_is_example_weighted():
  results = [dict(correct=3.0, num_predictions=4.0), dict(correct=1.0, num_predictions=6.0),
             dict(correct=2.0, num_predictions=2.0)]
  acc = hierarchical.cluster_accuracy(results, [0, 0, 1], 3)
  np.testing.assert_allclose(acc[:2], [4.0 / 10.0, 1.0])
  assert np.isnan(acc[2])
