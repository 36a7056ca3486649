"""Hierarchical FL, algorithm level: the global step vs numpy (weighted, robust, idle clusters), cluster weights,
clustering (natural ids, planted label groups, update directions vs numpy local SGD), per-cluster accuracy.

The process on the engine is tested in tests/engine/test_hierarchical_process.py.
"""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_fl import aggregators
from tff_fl import tasks
from tff_fl.algorithms import hierarchical
from tff_fl.algorithms import model_types
from tff_fl.data import client_data

from numpy_reference import logreg_loss_and_grads  # tests/numpy_reference.py

sgd = tff.learning.optimizers.build_sgdm


@pytest.fixture(scope='module')
def planted():
  """12 clients in 3 planted label groups (classes 3g..3g+2), 4 features, 9 classes."""
  rng = np.random.default_rng(0)
  arrays, groups = {}, []
  for i in range(12):
    group = i % 3
    labels = rng.choice([3 * group, 3 * group + 1, 3 * group + 2], size=30).astype(np.int32)
    arrays[f'client_{i:02d}'] = (rng.random((30, 4)).astype(np.float32), labels)
    groups.append(group)
  fed = client_data.from_client_arrays(arrays, test_fraction=0.0, seed=0, num_classes=9)
  return tasks.Task('planted', fed, 'logreg', (4,), 9), groups


def _models(rng, num, shapes=((4, 3), (3,))):
  return [tff.learning.models.ModelWeights([rng.normal(size=s).astype(np.float32) for s in shapes], [])
          for _ in range(num)]


def test_global_step_weighted_mean_optimizer_and_mixing_vs_numpy(planted):
  task, _ = planted
  weights_type, _, _ = model_types.model_types(task.model_fn)
  rng = np.random.default_rng(1)
  g, *clusters = _models(rng, 4, [tuple(t.shape) for t in weights_type.trainable])
  step = hierarchical.GlobalStep(weights_type, server_optimizer=sgd(0.5))
  weights, mixing = np.array([2.0, 0.0, 1.0], np.float32), 0.4
  _, new_g, mixed, _ = step.next(step.initialize(), g, clusters, weights, mixing)
  for j, gj in enumerate(g.trainable):
    delta = sum(w * (gj - c.trainable[j]) for w, c in zip(weights, clusters)) / weights.sum()
    want = gj - 0.5 * delta
    np.testing.assert_allclose(new_g.trainable[j], want, rtol=1e-5, atol=1e-6)
    for k, c in enumerate(clusters):
      np.testing.assert_allclose(mixed[k].trainable[j], mixing * c.trainable[j] + (1 - mixing) * want,
                                 rtol=1e-5, atol=1e-6)

  # No cluster trained since the last global step: every weight 0, the global model stays.
  _, same, _, _ = step.next(step.initialize(), g, clusters, np.zeros(3, np.float32), 0.0)
  for a, b in zip(same.trainable, g.trainable):
    np.testing.assert_allclose(a, b, atol=1e-7)

  # A robust global aggregator: one vote per cluster (weights ignored), the coordinate-wise median of the deltas.
  robust = hierarchical.GlobalStep(weights_type, aggregators.median(), sgd(1.0))
  _, med, _, measurements = robust.next(robust.initialize(), g, clusters, weights, 0.0)
  for j, gj in enumerate(g.trainable):
    want = gj - np.median([gj - c.trainable[j] for c in clusters], axis=0)
    np.testing.assert_allclose(med.trainable[j], want, rtol=1e-5, atol=1e-6)
  assert int(measurements['aggregator']['cohort_size']) == 3


def test_cluster_weights_user_vector_and_activity():
  examples = np.array([5.0, 0.0, 7.0])
  user = hierarchical.parse_cluster_weighting('1,3,2', 3)
  np.testing.assert_array_equal(hierarchical.cluster_weights(user, examples), [1.0, 0.0, 2.0])
  np.testing.assert_array_equal(hierarchical.cluster_weights('uniform', examples), [1.0, 0.0, 1.0])
  np.testing.assert_array_equal(hierarchical.cluster_weights('examples', examples), [5.0, 0.0, 7.0])
  for bad in ('1,2', 'a,b,c', '-1,1,1', '0,0,0', 'sizes'):
    with pytest.raises(ValueError, match='^cluster_weighting must be'):
      hierarchical.parse_cluster_weighting(bad, 3)


def test_fewest_cluster_clients():
  assert hierarchical.fewest_cluster_clients([4, 8], 6) == 0  # The 6 may all come from the cluster of 8.
  assert hierarchical.fewest_cluster_clients([4, 8], 10) == 2
  assert hierarchical.fewest_cluster_clients([4, 8], 12) == 4  # Full participation: every cluster whole.


def test_natural_clusters_from_ids():
  ids = ['b/1', 'a/2', 'b/3', 'c/0']
  np.testing.assert_array_equal(hierarchical.natural_clusters(ids, 3), [1, 0, 1, 2])
  with pytest.raises(ValueError, match='^num_clusters must equal the 3 natural groups'):
    hierarchical.natural_clusters(ids, 2)
  with pytest.raises(ValueError, match='^cluster_by=natural needs'):
    hierarchical.natural_clusters(['client_0000'], 1)


def test_label_kmeans_recovers_planted_groups(planted):
  task, groups = planted
  found = hierarchical.assign_clusters('labels', task, 3, seed=0)
  pairs = collections.Counter(zip(groups, found.tolist()))
  assert len(pairs) == 3 and sorted(pairs.values()) == [4, 4, 4]  # A bijection between planted and found groups.
  with pytest.raises(ValueError, match='^cluster_by must be one of'):
    hierarchical.assign_clusters('regions', task, 3, seed=0)
  with pytest.raises(ValueError, match='^num_clusters must be between 1 and the number of clients'):
    hierarchical.assign_clusters('labels', task, 13, seed=0)


def test_update_directions_match_numpy_local_sgd_and_cluster_planted_groups(planted):
  task, groups = planted
  lr, batch, epochs = 0.5, 8, 2
  w0 = task.initial_weights(3)
  got = hierarchical.update_directions(task, sgd(lr), w0, epochs=epochs, batch_size=batch, seed=5)
  for i, cid in enumerate(task.client_ids):
    x, y = task.data.train[cid]
    order = task.train_order(cid, epochs=epochs, seed=5, round_num=0)
    x, y = x[order].astype(np.float64), y[order]
    w, b = (p.astype(np.float64) for p in w0.trainable)
    for s in range(0, len(x), batch):
      _, dw, db = logreg_loss_and_grads(w, b, x[s:s + batch], y[s:s + batch])
      w, b = w - lr * dw, b - lr * db
    want = np.concatenate([np.ravel(w0.trainable[0] - w), w0.trainable[1] - b])
    np.testing.assert_allclose(got[i], want / np.linalg.norm(want), atol=1e-5)
  found = hierarchical.assign_clusters('updates', task, 3, seed=0, client_optimizer=sgd(lr), initial_weights=w0,
                                       epochs=epochs, batch_size=batch)
  assert len(collections.Counter(zip(groups, found.tolist()))) == 3  # Updates point towards each group's labels.


def test_combine_train_metrics_and_cluster_accuracy():
  combined = hierarchical.combine_train_metrics([
      dict(loss=1.0, sparse_categorical_accuracy=0.5, num_examples=10, num_batches=2),
      dict(loss=4.0, sparse_categorical_accuracy=0.8, num_examples=30, num_batches=3)])
  assert combined == pytest.approx(dict(loss=3.25, sparse_categorical_accuracy=0.725, num_examples=40,
                                        num_batches=5))
  assert hierarchical.combine_train_metrics([])['loss'] == 0.0
  results = [dict(correct=3.0, num_predictions=4.0), dict(correct=1.0, num_predictions=6.0),
             dict(correct=2.0, num_predictions=2.0)]
  acc = hierarchical.cluster_accuracy(results, [0, 0, 1], 3)
  np.testing.assert_allclose(acc[:2], [4.0 / 10.0, 1.0])
  assert np.isnan(acc[2])
