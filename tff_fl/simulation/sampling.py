"""Cohort sampling. The cohort of a round depends only on (seed, round), so a resumed run samples what an
uninterrupted one would have."""

from typing import Sequence

import numpy as np


class UniformSampler:
  """`clients_per_round` clients uniformly without replacement each round."""

  def __init__(self, client_ids: Sequence[str], clients_per_round: int, seed: int):
    if not 1 <= clients_per_round <= len(client_ids):
      raise ValueError(f'clients_per_round must be between 1 and num_clients={len(client_ids)}; '
                       f'got {clients_per_round}.')
    self.client_ids = list(client_ids)
    self.clients_per_round = clients_per_round
    self.seed = seed

  def sample(self, round_num: int) -> list[str]:
    rng = np.random.default_rng([self.seed, round_num])
    idx = rng.choice(len(self.client_ids), size=self.clients_per_round, replace=False)
    return [self.client_ids[i] for i in sorted(idx)]
