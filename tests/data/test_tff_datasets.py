"""TFF's standard datasets loaded by the stock `load_data(cache_dir=...)` from tiny SQLite files written here.

The files follow `SqlClientData`'s schema (tables `examples`, `client_metadata`) with serialized `tf.train.Example`s,
written with sqlite3 directly. TFF's downloader is replaced by a function that fails, so a test passes only if
nothing is fetched.
"""

import collections
import json
import sqlite3

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_federated.python.simulation.datasets import download

from tff_fl.data import paths
from tff_fl.data import tff_datasets


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  def refuse(origin, filename):
    raise AssertionError(f'tried to download {origin} to {filename}')
  monkeypatch.setattr(download, '_fetch_lzma_file', refuse)


def _feature(value):
  value = np.asarray(value)
  if value.dtype.kind in 'SUO':
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode() for v in value.ravel()]))
  if value.dtype.kind == 'f':
    return tf.train.Feature(float_list=tf.train.FloatList(value=value.ravel().tolist()))
  return tf.train.Feature(int64_list=tf.train.Int64List(value=value.ravel().tolist()))


def write_sqlite(path, rows):
  """rows: list of (split_name, client_id, features dict). Writes TFF's two-table layout."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with sqlite3.connect(path) as con:
    con.execute('CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, '
                'serialized_example_proto BLOB NOT NULL);')
    con.execute('CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL, '
                'num_examples INTEGER NOT NULL);')
    counts = collections.Counter()
    for split, cid, features in rows:
      example = tf.train.Example(features=tf.train.Features(feature={k: _feature(v) for k, v in features.items()}))
      con.execute('INSERT INTO examples VALUES (?, ?, ?);', (split, cid, example.SerializeToString()))
      counts[(cid, split)] += 1
    for (cid, split), n in counts.items():
      con.execute('INSERT INTO client_metadata VALUES (?, ?, ?);', (cid, split, n))


def elements(client_data, cid):
  return list(client_data.create_tf_dataset_for_client(cid).as_numpy_iterator())


def test_emnist_digits_and_all(tmp_path):
  rng = np.random.default_rng(0)
  pix = {k: rng.random((28, 28)).astype(np.float32) for k in range(4)}
  write_sqlite(tmp_path / 'emnist_all.sqlite', [
      ('digits_only_train', 'f0000_14', {'pixels': pix[0], 'label': 3}),
      ('digits_only_train', 'f0000_14', {'pixels': pix[1], 'label': 7}),
      ('digits_only_train', 'f0001_41', {'pixels': pix[2], 'label': 0}),
      ('digits_only_test', 'f0000_14', {'pixels': pix[3], 'label': 9}),
      ('all_train', 'f0000_14', {'pixels': pix[3], 'label': 61}),
      ('all_test', 'f0001_41', {'pixels': pix[0], 'label': 35}),
  ])
  train, test = tff_datasets.load_emnist(cache_dir=tmp_path)
  assert train.client_ids == ['f0000_14', 'f0001_41'] and test.client_ids == ['f0000_14']
  got = elements(train, 'f0000_14')
  assert [e['label'] for e in got] == [3, 7] and got[0]['label'].dtype == np.int32
  np.testing.assert_array_equal(got[1]['pixels'], pix[1])
  arrays = tff_datasets.client_arrays(train, 'pixels', 'label')
  assert list(arrays) == ['f0000_14', 'f0001_41']
  np.testing.assert_array_equal(arrays['f0000_14'][0], np.stack([pix[0], pix[1]]))
  np.testing.assert_array_equal(arrays['f0001_41'][1], [0])
  train_all, test_all = tff_datasets.load_emnist(cache_dir=tmp_path, only_digits=False)
  assert [e['label'] for e in elements(train_all, 'f0000_14')] == [61]
  assert [e['label'] for e in elements(test_all, 'f0001_41')] == [35]
  with pytest.raises(ValueError, match=r"x_key/y_key must be features .*'image'"):
    tff_datasets.client_arrays(train, 'image', 'label')


def test_shakespeare_snippets(tmp_path):
  write_sqlite(tmp_path / 'shakespeare.sqlite', [
      ('train', 'THE_TRAGEDY_OF_KING_LEAR_KENT', {'snippets': ['Good my liege,']}),
      ('train', 'THE_TRAGEDY_OF_KING_LEAR_KENT', {'snippets': ['Royal Lear,\nWhom I have ever honour\'d']}),
      ('test', 'THE_TRAGEDY_OF_KING_LEAR_KENT', {'snippets': ['See better, Lear;']}),
  ])
  train, test = tff_datasets.load_shakespeare(cache_dir=tmp_path)
  assert [e['snippets'] for e in elements(train, 'THE_TRAGEDY_OF_KING_LEAR_KENT')] == [
      b'Good my liege,', b"Royal Lear,\nWhom I have ever honour'd"]
  assert [e['snippets'] for e in elements(test, 'THE_TRAGEDY_OF_KING_LEAR_KENT')] == [b'See better, Lear;']


def test_stackoverflow_three_splits_and_vocab_files(tmp_path):
  def post(tokens, score):
    return {'creation_date': '2010-01-08 09:34:05 UTC', 'score': score, 'tags': 'python|numpy',
            'title': 'how to', 'tokens': tokens, 'type': 'question'}
  write_sqlite(tmp_path / 'stackoverflow.sqlite', [
      ('train', '00000001', post('a b c', 4)), ('heldout', '00000002', post('d e', -1)),
      ('test', '00000001', post('f', 0))])
  train, heldout, test = tff_datasets.load_stackoverflow(cache_dir=tmp_path)
  (element,) = elements(train, '00000001')
  assert element['tokens'] == b'a b c' and element['score'] == 4 and element['tags'] == b'python|numpy'
  assert heldout.client_ids == ['00000002'] and elements(test, '00000001')[0]['tokens'] == b'f'
  (tmp_path / 'datasets').mkdir()
  (tmp_path / 'datasets' / 'stackoverflow.word_count').write_text('the 300\nto 200\na 100\n')
  (tmp_path / 'datasets' / 'stackoverflow.tag_count').write_text(json.dumps({'java': 5, 'python': 9}))
  assert tff_datasets.load_stackoverflow_word_counts(tmp_path, vocab_size=2) == collections.OrderedDict(
      [('the', 300), ('to', 200)])
  assert list(tff_datasets.load_stackoverflow_tag_counts(tmp_path).items()) == [('python', 9), ('java', 5)]
  with pytest.raises(ValueError, match=r'vocab_size must be None or a positive int; got 0'):
    tff_datasets.load_stackoverflow_word_counts(tmp_path, vocab_size=0)


def test_cifar100(tmp_path):
  image = np.random.default_rng(1).integers(0, 256, size=(32, 32, 3))
  write_sqlite(tmp_path / 'cifar100.sqlite', [
      ('train', '0', {'image': image, 'label': 42, 'coarse_label': 7}),
      ('test', '5', {'image': image[::-1], 'label': 1, 'coarse_label': 0})])
  train, test = tff_datasets.load_cifar100(cache_dir=tmp_path)
  (element,) = elements(train, '0')
  assert element['image'].dtype == np.uint8 and element['label'] == 42 and element['coarse_label'] == 7
  np.testing.assert_array_equal(element['image'], image)
  assert test.client_ids == ['5']


@pytest.mark.parametrize('load, name', [
    (tff_datasets.load_emnist, 'emnist_all.sqlite'), (tff_datasets.load_shakespeare, 'shakespeare.sqlite'),
    (tff_datasets.load_stackoverflow, 'stackoverflow.sqlite'), (tff_datasets.load_cifar100, 'cifar100.sqlite'),
    (tff_datasets.load_stackoverflow_word_counts, 'stackoverflow.word_count'),
    (tff_datasets.load_stackoverflow_tag_counts, 'stackoverflow.tag_count')])
def test_missing_file_is_one_line_how_to(tmp_path, load, name):
  with pytest.raises(paths.MissingDataError) as err:
    load(cache_dir=tmp_path / 'cache')
  message = str(err.value)
  assert '\n' not in message and name in message and str(tmp_path / 'cache') in message
  assert 'tff.simulation.datasets.' in message
  assert not (tmp_path / 'cache').exists()  # nothing was created, let alone downloaded


def test_default_cache_dir_and_bad_name(tmp_path, monkeypatch):
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
  assert tff_datasets.tff_cache_dir() == tmp_path / 'tff'
  write_sqlite(tmp_path / 'tff' / 'shakespeare.sqlite', [('train', 'A', {'snippets': ['x']}),
                                                        ('test', 'A', {'snippets': ['y']})])
  train, _ = tff_datasets.load_shakespeare()
  assert train.client_ids == ['A']
  with pytest.raises(ValueError, match=r"dataset must be one of \['emnist', .*\]; got 'mnist'"):
    tff_datasets.sqlite_path('mnist')
