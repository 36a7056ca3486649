"""TFF's standard federated datasets (EMNIST, Shakespeare, Stack Overflow, CIFAR-100) from a user-supplied cache.

Each loader checks that TFF's decompressed SQLite file is already in `cache_dir` (default `<data_dir>/tff`), then
calls the stock `tff.simulation.datasets.<name>.load_data(cache_dir=...)`, which finds it there and does not
download. A missing file raises a one-line `MissingDataError`. The returned objects are TFF `ClientData`s whose
elements are the stock ones:

* EMNIST: OrderedDict(label=int32 [], pixels=float32 [28, 28]); Shakespeare: OrderedDict(snippets=string []);
* Stack Overflow: OrderedDict(creation_date, score, tags, title, tokens, type); CIFAR-100: OrderedDict(
  coarse_label=int64 [], image=uint8 [32, 32, 3], label=int64 []).

The SQLite schema (TFF's `sql_client_data.SqlClientData`): table `examples(split_name, client_id,
serialized_example_proto)` holding serialized `tf.train.Example`s and table `client_metadata(client_id, split_name,
num_examples)`.
"""

import collections
import json
import os
import pathlib
from typing import Optional, Sequence, Union

import numpy as np
import tensorflow_federated as tff

from tff_fl.data import paths

PathLike = Union[str, os.PathLike]
# Dataset name -> the decompressed file TFF's `load_data` looks for in its cache_dir.
SQLITE_FILES = collections.OrderedDict(
    emnist='emnist_all.sqlite',
    shakespeare='shakespeare.sqlite',
    stackoverflow='stackoverflow.sqlite',
    cifar100='cifar100.sqlite',
)
# Stack Overflow vocabularies, as `load_word_counts` / `load_tag_counts` leave them extracted under cache_dir.
STACKOVERFLOW_WORD_COUNTS = pathlib.Path('datasets') / 'stackoverflow.word_count'
STACKOVERFLOW_TAG_COUNTS = pathlib.Path('datasets') / 'stackoverflow.tag_count'


def tff_cache_dir(cache_dir: Optional[PathLike] = None) -> pathlib.Path:
  """`cache_dir` if given, else `<data_dir>/tff`."""
  return pathlib.Path(cache_dir) if cache_dir is not None else paths.data_dir() / 'tff'


def _how_to_get(file_name: str, tff_call: str, cache_dir: pathlib.Path) -> str:
  return (f"copy TFF's {file_name} into {cache_dir} (on a machine with internet, "
          f"tff.simulation.datasets.{tff_call}(cache_dir=DIR) leaves it in DIR) or pass another cache_dir")


def sqlite_path(dataset: str, cache_dir: Optional[PathLike] = None) -> pathlib.Path:
  """The existing SQLite file of `dataset` (a key of SQLITE_FILES) in the cache; one-line error when absent."""
  if dataset not in SQLITE_FILES:
    raise ValueError(f'dataset must be one of {list(SQLITE_FILES)}; got {dataset!r}')
  root = tff_cache_dir(cache_dir)
  how = _how_to_get(SQLITE_FILES[dataset], f'{dataset}.load_data', root)
  return paths.require_file(root / SQLITE_FILES[dataset], how)


def load_emnist(cache_dir: Optional[PathLike] = None, only_digits: bool = True):
  """(train, test) federated EMNIST: 3383 writers, digits only (10 classes) or all 62 classes."""
  root = sqlite_path('emnist', cache_dir).parent
  return tff.simulation.datasets.emnist.load_data(only_digits=only_digits, cache_dir=str(root))


def load_shakespeare(cache_dir: Optional[PathLike] = None):
  """(train, test) federated Shakespeare (715 LEAF roles); elements OrderedDict(snippets=string)."""
  root = sqlite_path('shakespeare', cache_dir).parent
  return tff.simulation.datasets.shakespeare.load_data(cache_dir=str(root))


def load_stackoverflow(cache_dir: Optional[PathLike] = None):
  """(train, heldout, test) federated Stack Overflow."""
  root = sqlite_path('stackoverflow', cache_dir).parent
  return tff.simulation.datasets.stackoverflow.load_data(cache_dir=str(root))


def load_cifar100(cache_dir: Optional[PathLike] = None):
  """(train, test) federated CIFAR-100 (500 train / 100 test clients in TFF's release)."""
  root = sqlite_path('cifar100', cache_dir).parent
  return tff.simulation.datasets.cifar100.load_data(cache_dir=str(root))


def load_stackoverflow_word_counts(cache_dir: Optional[PathLike] = None,
                                   vocab_size: Optional[int] = None) -> collections.OrderedDict:
  """word -> count from the extracted `datasets/stackoverflow.word_count` ('word count' lines, most frequent first).

  Read directly: TFF's `load_word_counts` re-downloads unless its archive's hash matches.
  """
  if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size <= 0):
    raise ValueError(f'vocab_size must be None or a positive int; got {vocab_size!r}')
  root = tff_cache_dir(cache_dir)
  how = _how_to_get(str(STACKOVERFLOW_WORD_COUNTS), 'stackoverflow.load_word_counts', root)
  path = paths.require_file(root / STACKOVERFLOW_WORD_COUNTS, how)
  counts = collections.OrderedDict()
  with open(path, encoding='utf-8') as f:
    for line in f:
      if vocab_size is not None and len(counts) >= vocab_size:
        break
      word, count = line.split()
      counts[word] = int(count)
  return counts


def load_stackoverflow_tag_counts(cache_dir: Optional[PathLike] = None) -> collections.OrderedDict:
  """tag -> count from the extracted `datasets/stackoverflow.tag_count` (JSON), most frequent first, like TFF."""
  root = tff_cache_dir(cache_dir)
  how = _how_to_get(str(STACKOVERFLOW_TAG_COUNTS), 'stackoverflow.load_tag_counts', root)
  path = paths.require_file(root / STACKOVERFLOW_TAG_COUNTS, how)
  with open(path, encoding='utf-8') as f:
    tag_counts = json.load(f)
  return collections.OrderedDict(sorted(tag_counts.items(), key=lambda item: item[1], reverse=True))


def client_arrays(client_data, x_key: str, y_key: str,
                  client_ids: Optional[Sequence[str]] = None) -> collections.OrderedDict:
  """client_id -> (x [n, ...], y [n]) numpy arrays of a TFF ClientData's `x_key`/`y_key` features.

  E.g. EMNIST: `client_arrays(train, 'pixels', 'label')`; the caller adds a channel axis or casts as its model needs.
  """
  ids = list(client_data.client_ids if client_ids is None else client_ids)
  out = collections.OrderedDict()
  for cid in ids:
    xs, ys = [], []
    for element in client_data.create_tf_dataset_for_client(cid).as_numpy_iterator():
      if x_key not in element or y_key not in element:
        raise ValueError(f'x_key/y_key must be features of the dataset {sorted(element)}; got {x_key!r}, {y_key!r}')
      xs.append(element[x_key])
      ys.append(element[y_key])
    out[cid] = (np.stack(xs) if xs else np.zeros((0,)), np.asarray(ys))
  return out
