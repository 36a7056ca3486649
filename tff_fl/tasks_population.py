"""Population tasks `mnist_population` and `digits_population`: `--num_clients` clients (10^6 fits) of
`--examples_per_client` examples each, drawn uniformly with replacement (seeded by `--seed`).

Train rows are drawn from the source's training split, test rows (round(examples_per_client * test_fraction /
(1 - test_fraction)) per client, at least 1 when test_fraction > 0) from its test split (digits: a seeded 80/20 split
of sklearn's 1,797 images). Client data are `flat_arrays.FlatFederatedArrays`: the source arrays are shared and each
client is a slice of one int64 row index, so a 10^6-client population costs ~8 bytes per client example on top of
the source and builds in about a second. Registered in `tasks.TASKS` when `tff_fl` is imported.
"""

import numpy as np

from tff_fl import tasks as tasks_lib
from tff_fl import tasks_real
from tff_fl.data import flat_arrays
from tff_fl.data import mnist
from tff_fl.data import sources

IMAGE_MODELS = ('logreg', '2nn', 'cnn', 'simple_cnn')


def test_examples_per_client(examples_per_client: int, test_fraction: float) -> int:
  if test_fraction <= 0:
    return 0
  return max(1, int(round(examples_per_client * test_fraction / (1.0 - test_fraction))))


def population_arrays(train: sources.ArrayData, test: sources.ArrayData,
                      cfg: tasks_lib.TaskConfig) -> flat_arrays.FlatFederatedArrays:
  if cfg.examples_per_client < 1:
    raise ValueError(f'examples_per_client must be >= 1; got {cfg.examples_per_client}.')
  if cfg.partition != 'iid':
    raise ValueError(f"task={cfg.task} draws every client's examples iid with replacement; use partition=iid, got "
                     f"'{cfg.partition}'.")
  return flat_arrays.resampled(
      train.x, train.y, test.x, test.y, num_clients=cfg.num_clients, examples_per_client=cfg.examples_per_client,
      test_examples_per_client=test_examples_per_client(cfg.examples_per_client, cfg.test_fraction),
      num_classes=max(train.num_classes, test.num_classes), seed=cfg.seed)


def _check_model(cfg: tasks_lib.TaskConfig) -> None:
  if cfg.model not in IMAGE_MODELS:
    raise ValueError(f"task={cfg.task} allows model={' or '.join(IMAGE_MODELS)}; got '{cfg.model}'.")


def mnist_population(cfg: tasks_lib.TaskConfig) -> tasks_lib.Task:
  _check_model(cfg)
  fed = population_arrays(mnist.load_mnist('train'), mnist.load_mnist('test'), cfg)
  return tasks_lib.Task('mnist_population', fed, cfg.model, tuple(fed.train.x.shape[1:]), fed.num_classes)


def digits_population(cfg: tasks_lib.TaskConfig) -> tasks_lib.Task:
  _check_model(cfg)
  data = sources.load_digits()
  perm = np.random.default_rng([cfg.seed, 17]).permutation(len(data.y))
  cut = int(0.8 * len(perm))
  part = lambda idx: sources.ArrayData(data.x[idx], data.y[idx])
  fed = population_arrays(part(perm[:cut]), part(perm[cut:]), cfg)
  return tasks_lib.Task('digits_population', fed, cfg.model, tuple(fed.train.x.shape[1:]), fed.num_classes)


def register() -> None:
  for name, build in (('mnist_population', mnist_population), ('digits_population', digits_population)):
    if name not in tasks_lib.TASKS:
      tasks_lib.register(name, tasks_real.missing_data_is_value_error(build), default_model='logreg', default_partition='iid')


register()
