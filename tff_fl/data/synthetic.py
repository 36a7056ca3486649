"""FedProx synthetic federated data (Li et al. 2020, "Federated Optimization in Heterogeneous Networks", Sec. 5.1).

Follows the paper's generator (github.com/litian96/FedProx, data/synthetic_*/generate_synthetic.py and
data/synthetic_iid/generate_iid.py), with numpy's seeded `default_rng` instead of the global RNG:

  n_k ~ int(lognormal(4, 2)) + 50 examples on device k
  Synthetic(alpha, beta):  u_k ~ N(0, alpha), B_k ~ N(0, beta)   (scale = std, as `np.random.normal` in the code)
                           W_k ~ N(u_k, 1) [dim, C], b_k ~ N(u_k, 1) [C], v_k ~ N(B_k, 1) [dim]
  Synthetic-IID:           one W ~ N(0, 1), b ~ N(0, 1) for all devices, v_k = 0
  x ~ N(v_k, Sigma), Sigma = diag(j^-1.2), j = 1..dim;   y = argmax(softmax(x W_k + b_k)) = argmax(x W_k + b_k)

Each device is shuffled and split int(0.9 n_k) train / the rest test, as the FedProx scripts do.
"""

import numpy as np

from tff_fl.data import client_data
from tff_fl.data import partition

TEST_FRACTION = 0.1


def _check(alpha, beta, num_clients, dim, num_classes) -> None:
  for name, value in (('--synthetic_alpha', alpha), ('--synthetic_beta', beta)):
    if not np.isfinite(value) or value < 0:
      raise ValueError(f'{name} must be a finite number >= 0; got {value!r}')
  for name, value, low in (('--num_clients', num_clients, 1), ('dim', dim, 1), ('num_classes', num_classes, 2)):
    if not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f'{name} must be an integer >= {low}; got {value!r}')


def synthetic_fedprox(
    alpha: float, beta: float, iid: bool = False, num_clients: int = 30, dim: int = 60, num_classes: int = 10,
    seed: int = 0, test_fraction: float = TEST_FRACTION
) -> client_data.FederatedArrays:
  """FedProx Synthetic(alpha, beta) (or Synthetic-IID when `iid`, which ignores alpha and beta).

  Returns `num_clients` devices with x [n, dim] float32, y [n] int32 in [0, num_classes), split 90/10 per device.
  """
  _check(alpha, beta, num_clients, dim, num_classes)
  rng = np.random.default_rng(seed)
  samples = rng.lognormal(4, 2, num_clients).astype(np.int64) + 50
  std_x = np.power(np.arange(1, dim + 1, dtype=np.float64), -1.2) ** 0.5  # sqrt of the diagonal covariance.
  if iid:
    mean_x = np.zeros((num_clients, dim))
    w_global = rng.normal(0.0, 1.0, (dim, num_classes))
    b_global = rng.normal(0.0, 1.0, num_classes)
  else:
    mean_w = rng.normal(0.0, alpha, num_clients)
    big_b = rng.normal(0.0, beta, num_clients)
    mean_x = np.stack([rng.normal(big_b[k], 1.0, dim) for k in range(num_clients)])
  arrays = {}
  for k in range(num_clients):
    if iid:
      w, b = w_global, b_global
    else:
      w = rng.normal(mean_w[k], 1.0, (dim, num_classes))
      b = rng.normal(mean_w[k], 1.0, num_classes)
    x = mean_x[k] + rng.standard_normal((samples[k], dim)) * std_x
    y = np.argmax(x @ w + b, axis=1).astype(np.int32)
    arrays[partition.client_id(k, num_clients)] = (x.astype(np.float32), y)
  return client_data.from_client_arrays(arrays, test_fraction=test_fraction, seed=seed, num_classes=num_classes)
