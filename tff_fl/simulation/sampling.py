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


def eval_sample(client_ids: Sequence[str], num: int, seed: int, round_num: int) -> list[str]:
  """`num` of `client_ids` uniformly without replacement, in their order; depends only on (seed, round) (a stream
  apart from the cohort's), so a resumed run evaluates the clients an uninterrupted one would have."""
  if not 1 <= num <= len(client_ids):
    raise ValueError(f'eval_clients must be between 1 and num_clients={len(client_ids)}; got {num}.')
  idx = np.random.default_rng([seed, round_num, 0xE7A1]).choice(len(client_ids), size=num, replace=False)
  return [client_ids[i] for i in np.sort(idx)]
