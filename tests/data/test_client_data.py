"""Tests for tff_fl.data.client_data: splits, numpy round trips through stock TFF ClientData, errors."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.data import client_data
from tff_fl.data import partition
from tff_fl.data import sources


def _indexed_data(n=200, num_classes=4):
  """Examples whose features encode their own index (x[i] = [i, -i]), so a split can be traced back exactly."""
  index = np.arange(n)
  return sources.ArrayData(x=np.stack([index, -index], axis=1).astype(np.float32), y=index % num_classes)


def _as_numpy(dataset):
  elements = list(dataset.as_numpy_iterator())
  return np.stack([e['x'] for e in elements]), np.array([e['y'] for e in elements])


def test_from_partition_splits_each_clients_indices_exactly():
  data = _indexed_data()
  ids, parts = partition.partition('dirichlet', data, 6, seed=0, dirichlet_alpha=0.5)
  fa = client_data.from_partition(data, ids, parts, test_fraction=0.2, seed=1)
  assert fa.client_ids == ids and fa.num_classes == 4
  for cid, idx in zip(ids, parts):
    train_idx = fa.train[cid][0][:, 0].astype(np.int64)
    test_idx = fa.test[cid][0][:, 0].astype(np.int64)
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, test_idx])), idx)
    np.testing.assert_array_equal(fa.train[cid][1], data.y[train_idx])  # Labels stay with their features.
    assert train_idx.size == int(0.8 * idx.size) and test_idx.size >= 1
  assert not np.array_equal(fa.train[ids[0]][0][:, 0], np.sort(fa.train[ids[0]][0][:, 0]))  # Shuffled.


def test_split_is_seeded():
  data = _indexed_data()
  ids, parts = partition.partition('iid', data, 4, seed=0)
  a, b, c = (client_data.from_partition(data, ids, parts, seed=s) for s in (5, 5, 6))
  np.testing.assert_array_equal(a.train[ids[0]][0], b.train[ids[0]][0])
  assert not np.array_equal(a.train[ids[0]][0], c.train[ids[0]][0])


def test_small_clients_keep_one_train_and_one_test_example():
  arrays = {'b': (np.ones((1, 3)), np.array([1])), 'a': (np.zeros((2, 3)), np.array([0, 1]))}
  fa = client_data.from_client_arrays(arrays, test_fraction=0.9, seed=0, num_classes=2)
  assert fa.client_ids == ['a', 'b']
  assert fa.num_examples('train') == {'a': 1, 'b': 1}
  assert fa.num_examples('test') == {'a': 1, 'b': 0}
  assert fa.test_client_data().client_ids == ['a']  # Clients without test rows are left out of evaluation.


def test_test_fraction_zero_keeps_everything_for_training():
  data = _indexed_data(40)
  ids, parts = partition.partition('iid', data, 4, seed=0)
  fa = client_data.from_partition(data, ids, parts, test_fraction=0.0)
  assert sum(fa.num_examples('train').values()) == 40
  assert fa.centralized('test')[0].shape == (0, 2)
  with pytest.raises(ValueError, match='no client has test examples'):
    fa.test_client_data()


def test_centralized_concatenates_in_client_order():
  data = _indexed_data()
  ids, parts = partition.partition('shards', data, 5, seed=0)
  fa = client_data.from_partition(data, ids, parts, seed=0)
  x, y = fa.centralized('train')
  np.testing.assert_array_equal(x, np.concatenate([fa.train[c][0] for c in ids]))
  np.testing.assert_array_equal(y, np.concatenate([fa.train[c][1] for c in ids]))
  assert x.shape[0] + fa.centralized('test')[0].shape[0] == len(data)


def test_client_data_round_trip_equals_numpy_arrays():
  data = sources.load_digits()
  ids, parts = partition.partition('dirichlet', data, 5, seed=0, dirichlet_alpha=1.0)
  fa = client_data.from_partition(data, ids, parts, seed=0)
  for split, arrays, cd in (('train', fa.train, fa.train_client_data()), ('test', fa.test, fa.test_client_data())):
    assert cd.client_ids == ids, split
    assert cd.element_type_structure == fa.element_spec
    for cid in ids:
      x, y = _as_numpy(cd.create_tf_dataset_for_client(cid))
      np.testing.assert_array_equal(x, arrays[cid][0])
      np.testing.assert_array_equal(y, arrays[cid][1])
  assert fa.element_spec == collections.OrderedDict(
      x=tf.TensorSpec((8, 8, 1), tf.float32), y=tf.TensorSpec((), tf.int32))


def test_serializable_dataset_fn_traces_with_string_tensor_ids():
  data = _indexed_data(60)
  ids, parts = partition.partition('iid', data, 3, seed=0)
  fa = client_data.from_partition(data, ids, parts, seed=0)
  cd = fa.train_client_data()

  @tf.function
  def first_and_count(cid):
    ds = cd.serializable_dataset_fn(cid)
    return ds.reduce(tf.constant(0.0), lambda s, e: s + e['x'][0]), ds.reduce(0, lambda n, _: n + 1)

  for cid in ids:
    total, count = first_and_count(tf.constant(cid))
    assert int(count) == fa.num_examples()[cid]
    assert float(total) == pytest.approx(float(fa.train[cid][0][:, 0].sum()))
  with pytest.raises(tf.errors.InvalidArgumentError):
    first_and_count(tf.constant('no_such_client'))


def test_dataset_computation_runs_in_tff():
  data = _indexed_data(60)
  ids, parts = partition.partition('iid', data, 3, seed=0)
  fa = client_data.from_partition(data, ids, parts, seed=0)
  cd = fa.train_client_data()

  @tff.tensorflow.computation(cd.dataset_computation.type_signature.result)
  def label_sum(ds):
    return ds.reduce(tf.constant(0, tf.int32), lambda s, e: s + e['y'])

  for cid in ids:
    assert label_sum(cd.dataset_computation(cid)) == int(fa.train[cid][1].sum())


@pytest.mark.parametrize('call, match', [
    (lambda d: client_data.from_partition(d, ['a', 'b'], [np.arange(3), np.array([], np.int64)]), "client 'b'"),
    (lambda d: client_data.from_partition(d, ['a'], [np.arange(3), np.arange(3, 5)]), '1 client ids but 2'),
    (lambda d: client_data.from_partition(d, ['a', 'a'], [np.arange(3), np.arange(3, 5)]), 'distinct'),
    (lambda d: client_data.from_partition(d, ['a'], [np.arange(3)], test_fraction=1.0), '^test_fraction must be in'),
    (lambda d: client_data.from_partition(d, ['a'], [np.arange(3)], test_fraction=-0.1), '^test_fraction must be in'),
    (lambda d: client_data.from_partition(d, ['a'], [np.arange(3)]).num_examples('val'), 'split must be one of'),
])
def test_bad_input_raises_value_error(call, match):
  with pytest.raises(ValueError, match=match):
    call(_indexed_data(10))


def test_unknown_client_id_is_rejected_by_stock_client_data():
  data = _indexed_data(10)
  fa = client_data.from_partition(data, ['a'], [np.arange(10)])
  with pytest.raises(ValueError, match='not a client'):
    fa.train_client_data().create_tf_dataset_for_client('b')
