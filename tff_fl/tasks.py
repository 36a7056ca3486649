"""Named tasks: client data + model + per-round client datasets + evaluation data.

A `Task` owns `FederatedArrays` (per-client numpy train/test splits) and a Keras builder. Client datasets are built
from in-memory tensors each round: shuffled with a seed derived from (seed, round, client), repeated for the local
epochs, batched. Adding a task = one builder function, `register(name, build, default_model=, default_partition=)`
(the `TASKS` registry); `TaskConfig(task=name)` then uses the task's default model and partition.
"""

import collections
import dataclasses
import zlib
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import registry
from tff_fl.data import client_data as client_data_lib
from tff_fl.data import feature_noise
from tff_fl.data import partition as partition_lib
from tff_fl.data import sources
from tff_fl.data import synthetic
from tff_fl.models import keras_models


@dataclasses.dataclass
class Task:
  """Data and model of one experiment. Invariant: every client has >= 1 training example."""
  name: str
  data: client_data_lib.FederatedArrays
  model_name: str
  input_shape: tuple
  num_classes: int

  def keras_model(self) -> tf.keras.Model:
    return keras_models.get_builder(self.model_name)(self.input_shape, self.num_classes)

  @property
  def element_spec(self) -> collections.OrderedDict:
    return self.data.element_spec

  @property
  def model_fn(self) -> Callable[[], tff.learning.models.VariableModel]:
    return keras_models.build_tff_model_fn(self.keras_model, self.element_spec)

  @property
  def client_ids(self) -> list[str]:
    return self.data.client_ids

  def initial_weights(self, seed: int) -> tff.learning.models.ModelWeights:
    """Seeded Keras initialisation, so a run's starting point depends only on `seed`."""
    tf.keras.utils.set_random_seed(seed)
    model = self.keras_model()
    return tff.learning.models.ModelWeights(
        trainable=[v.numpy() for v in model.trainable_weights],
        non_trainable=[v.numpy() for v in model.non_trainable_weights])

  def train_dataset(self, client_id: str, *, epochs: int, batch_size: int, seed: int, round_num: int,
                    max_examples: Optional[int] = None) -> tf.data.Dataset:
    """Client's training data: `epochs` passes, each a fresh permutation, batched.

    The permutations come from numpy with a seed derived from (seed, round, client), not from TF's seed state, so a
    round's data order is the same in a fresh run, a resumed run and any process.
    """
    x, y = self.data.train[client_id]
    if max_examples is not None:
      x, y = x[:max_examples], y[:max_examples]
    order = self.train_order(client_id, epochs=epochs, seed=seed, round_num=round_num, num_examples=len(x))
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x[order], y=y[order])).batch(batch_size)

  def train_order(self, client_id: str, *, epochs: int, seed: int, round_num: int,
                  num_examples: Optional[int] = None) -> np.ndarray:
    """Indices into the client's train arrays in the order of one round's local training: `epochs` permutations."""
    if num_examples is not None:
      n = num_examples
    elif hasattr(self.data.train, 'num_examples_of'):  # A FlatSplit: the count without gathering the rows.
      n = self.data.train.num_examples_of(client_id)
    else:
      n = len(self.data.train[client_id][1])
    rng = np.random.default_rng(derived_seed(seed, round_num, client_id))
    return np.concatenate([rng.permutation(n) for _ in range(epochs)])

  def eval_dataset(self, client_id: str, split: str = 'test', batch_size: int = 256) -> tf.data.Dataset:
    x, y = (self.data.test if split == 'test' else self.data.train)[client_id]
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(batch_size)


def derived_seed(seed: int, round_num: int, client_id: str) -> int:
  """A 31-bit seed that depends only on (seed, round, client id): stable across processes and resumes."""
  return zlib.crc32(f'{seed}/{round_num}/{client_id}'.encode()) & 0x7FFFFFFF


def _digits(cfg) -> Task:
  data = sources.load_digits()
  ids, parts = partition_lib.partition(cfg.partition, data, cfg.num_clients, cfg.seed,
                                       dirichlet_alpha=cfg.dirichlet_alpha, shards_per_client=cfg.shards_per_client,
                                       labels_per_client=cfg.labels_per_client)
  fed = client_data_lib.from_partition(data, ids, parts, test_fraction=cfg.test_fraction, seed=cfg.seed)
  return Task('digits', fed, cfg.model, tuple(data.x.shape[1:]), data.num_classes)


def _synthetic(cfg) -> Task:
  if cfg.model == 'cnn':
    raise ValueError("model=cnn needs image data; task=synthetic allows model=logreg or 2nn.")
  fed = synthetic.synthetic_fedprox(cfg.synthetic_alpha, cfg.synthetic_beta, iid=cfg.synthetic_iid,
                                    num_clients=cfg.num_clients, seed=cfg.seed)
  return Task('synthetic', fed, cfg.model, tuple(fed.element_spec['x'].shape), fed.num_classes)


@dataclasses.dataclass
class TaskConfig:
  """Flag values that define a task (see experiments/flag_groups.py). `model` / `partition` '' = the task's default."""
  task: str = 'digits'
  model: str = ''
  num_clients: int = 20
  examples_per_client: int = 10
  partition: str = ''
  dirichlet_alpha: float = 0.5
  shards_per_client: int = 2
  labels_per_client: int = 2
  feature_noise: float = 0.0
  test_fraction: float = 0.2
  synthetic_alpha: float = 1.0
  synthetic_beta: float = 1.0
  synthetic_iid: bool = False
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A registered task: `build(cfg) -> Task`, and the model and partition it uses when the config leaves them ''."""
  build: Callable[[TaskConfig], Task]
  default_model: str = 'logreg'
  default_partition: str = 'dirichlet'


TASKS = registry.Registry('task')  # name -> TaskSpec


def register(name: str, build: Callable[[TaskConfig], Task], *, default_model: str = 'logreg',
             default_partition: str = 'dirichlet') -> TaskSpec:
  """Registers task `name` (a name taken is a ValueError); see `TaskSpec`."""
  return TASKS.register(name, TaskSpec(build, default_model, default_partition))


def resolve(cfg: TaskConfig) -> TaskConfig:
  """`cfg` with an empty `model` / `partition` replaced by the task's defaults (unknown task: ValueError)."""
  spec = TASKS.get(cfg.task)
  return dataclasses.replace(cfg, model=cfg.model or spec.default_model,
                             partition=cfg.partition or spec.default_partition)


def build_task(cfg: TaskConfig) -> Task:
  """The registered task `cfg.task` built from `cfg` (defaults resolved); bad values are one-line ValueErrors."""
  cfg = resolve(cfg)
  keras_models.get_builder(cfg.model)  # Validates the model early.
  if cfg.num_clients < 1:
    raise ValueError(f'num_clients must be >= 1; got {cfg.num_clients}.')
  if not 0.0 <= cfg.test_fraction < 1.0:
    raise ValueError(f'test_fraction must be in [0, 1); got {cfg.test_fraction}.')
  noise_levels = feature_noise.noise_levels(cfg.num_clients, cfg.feature_noise)  # Validates before loading.
  task = TASKS.get(cfg.task).build(cfg)
  if cfg.feature_noise > 0:
    _add_feature_noise(task, cfg.feature_noise, cfg.seed, len(noise_levels))
  return task


def _add_feature_noise(task: Task, sigma: float, seed: int, num_clients: int) -> None:
  """NIID-Bench's feature skew on the task's training inputs (`tff_fl.data.feature_noise`); test data stay clean."""
  ids = task.client_ids
  if len(ids) != num_clients or not all(np.issubdtype(task.data.train[c][0].dtype, np.floating) for c in ids):
    raise ValueError(f'feature_noise applies to tasks with float inputs and num_clients clients (mnist, '
                     f'fashion_mnist, digits); got task={task.name}')
  noisy = feature_noise.add_feature_noise([task.data.train[c][0] for c in ids], sigma, seed)
  task.data.train = {c: (x, task.data.train[c][1]) for c, x in zip(ids, noisy)}


register('digits', _digits)
register('synthetic', _synthetic)
