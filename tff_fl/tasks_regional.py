"""Task `regional_digits`: digits in 4 regions with different label mixes and a feature shift (hierarchical FL).

A class c prefers region c mod 4 with probability 0.7, and region r's images are rotated by r x 90 degrees;
`num_clients` are split evenly over the regions and named 'region<r>/client_<i>', so natural clustering by the name's
prefix recovers the regions. Registered in `tasks.TASKS` when `tff_fl` is imported.
"""

import numpy as np

from tff_fl import tasks as tasks_lib
from tff_fl.data import client_data
from tff_fl.data import partition as partition_lib
from tff_fl.data import sources

NUM_REGIONS = 4
REGION_PREFERENCE = 0.7


def regional_digits(cfg: tasks_lib.TaskConfig) -> tasks_lib.Task:
  """Digits with regional label mixes and per-region rotations (module docstring); clients 'region<r>/client_<i>'."""
  if cfg.num_clients < NUM_REGIONS:
    raise ValueError(f'num_clients must be >= {NUM_REGIONS} for task=regional_digits; got {cfg.num_clients}.')
  data = sources.load_digits()
  rng = np.random.default_rng([cfg.seed, 41])
  preferred = data.y % NUM_REGIONS
  other = (preferred + rng.integers(1, NUM_REGIONS, data.y.size)) % NUM_REGIONS
  region = np.where(rng.random(data.y.size) < REGION_PREFERENCE, preferred, other)
  arrays = {}
  for r in range(NUM_REGIONS):
    idx = np.flatnonzero(region == r)
    x = np.rot90(data.x[idx], k=r, axes=(1, 2))
    n_clients = cfg.num_clients // NUM_REGIONS + int(r < cfg.num_clients % NUM_REGIONS)
    for i, part in enumerate(partition_lib.iid(idx.size, n_clients, cfg.seed + r)):
      arrays[f'region{r}/client_{i:04d}'] = (x[part], data.y[idx][part])
  fed = client_data.from_client_arrays(arrays, cfg.test_fraction, cfg.seed, data.num_classes)
  return tasks_lib.Task('regional_digits', fed, cfg.model, tuple(data.x.shape[1:]), data.num_classes)


if 'regional_digits' not in tasks_lib.TASKS:
  tasks_lib.register('regional_digits', regional_digits)
