"""NIID-Bench's noise-based feature skew: client i's training inputs get Gaussian noise of std sigma * i / (n - 1).

NIID-Bench (Li et al., ICDE 2022; `experiments.py` with `--noise=sigma --noise_type=level`, `utils.AddGaussianNoise`)
splits the data with `homo` (here `--partition=iid`) and gives party i (0-based, of n) the noise level
sigma * i / (n - 1): party 0 stays clean, party n-1 gets sigma. Inputs are not clipped afterwards.

What we chose where NIID-Bench differs or is silent:
  * NIID-Bench draws the noise in a torchvision transform, i.e. afresh each time an example is loaded (every local
    epoch); here each training example gets one fixed draw, seeded by (seed, client index), so the noisy data are a
    pure function of the arguments and a resumed run sees the same data.
  * NIID-Bench evaluates its global model on the union of every party's noisy copy of the test set; here the test
    data stay clean (the official test set), as issue 16 asks, so accuracies are on clean images.
  * Client i is the i-th client id in sorted order (the partitioner's order).
"""

from typing import Sequence

import numpy as np

NOISE_STREAM = 0x4E6F6973  # Separates the noise draws from the partition's use of the same seed.


def noise_levels(num_clients: int, sigma: float) -> np.ndarray:
  """[num_clients] float64: sigma * i / (num_clients - 1)."""
  if not np.isfinite(sigma) or sigma < 0:
    raise ValueError(f'feature_noise must be a finite number >= 0; got {sigma!r}')
  if sigma > 0 and num_clients < 2:
    raise ValueError(f'feature_noise needs num_clients >= 2 (levels sigma * i / (n - 1)); got {num_clients}')
  if num_clients < 2:
    return np.zeros(num_clients)
  return sigma * np.arange(num_clients) / (num_clients - 1)


def add_feature_noise(xs: Sequence[np.ndarray], sigma: float, seed: int) -> list[np.ndarray]:
  """Returns copies of the clients' inputs `xs` (in client order) with client i's noise added (dtype kept)."""
  levels = noise_levels(len(xs), sigma)
  out = []
  for i, (x, level) in enumerate(zip(xs, levels)):
    if level == 0:
      out.append(x)
      continue
    rng = np.random.default_rng([seed, NOISE_STREAM, i])
    out.append((x + level * rng.standard_normal(x.shape)).astype(x.dtype))
  return out
