"""The protocol's unmasked sum equals the plain modular sum of the survivors' values, exactly, for every number of
dropouts from 0 to n - t (several n, b, seeds; SecAgg and SecAgg+), and aborts below t survivors."""

import numpy as np
import pytest
import tensorflow as tf

from tff_fl.aggregators.secagg import protocol


def _round(q, alive, *, bits, threshold, k, seed, round_num=4, max_clients=None, corrupt=False, masked=None):
  """One round in which every sampled client masks and only the survivors' uploads and shares reach the server."""
  n = len(q)
  max_clients = max_clients or n + 2
  alive_padded = np.zeros(max_clients, np.int32)
  alive_padded[:n] = alive
  kw = dict(bits=bits, threshold=threshold, k=k, seed=seed, round_num=round_num, max_clients=max_clients)
  if masked is None:
    masked = _masked(q, **kw)
  masked_sum = masked[alive == 1].sum(0) % 2**bits
  shares = np.zeros([max_clients, max_clients], np.int64)
  for i in np.flatnonzero(alive):
    shares[i] = protocol.client_shares(i, n, alive_padded, **kw).numpy()
  if corrupt:
    shares[np.flatnonzero(alive)[0]] += 1
  total, aborted, survivors, t = protocol.server_recover(masked_sum, shares, alive_padded, n, **kw)
  return total.numpy(), bool(aborted), int(survivors), int(t)


def _masked(q, **kw):
  return np.stack([protocol.client_mask(tf.constant(q[i]), i, len(q), **kw).numpy() for i in range(len(q))])


@pytest.mark.parametrize('n,bits,threshold,k,seed', [
    (3, 8, 0.6, None, 0), (7, 16, 0.5, None, 1), (9, 32, 0.7, None, 2), (10, 12, 0.5, 4, 3), (12, 32, 0.6, 6, 4)])
def test_unmasked_sum_is_the_modular_sum_for_every_dropout_count(n, bits, threshold, k, seed):
  rng = np.random.default_rng(seed)
  q = rng.integers(0, 2**bits, size=(n, 40))  # Any values: the sum is taken mod 2^b.
  t = protocol.threshold_count(threshold, protocol.degree(n, k) + 1)
  masked = _masked(q, bits=bits, threshold=threshold, k=k, seed=seed, round_num=4, max_clients=n + 2)
  recovered = 0
  for dropped in range(0, n - t + 1):
    alive = np.ones(n, np.int32)
    alive[rng.choice(n, dropped, replace=False)] = 0
    total, aborted, survivors, t_got = _round(q, alive, bits=bits, threshold=threshold, k=k, seed=seed, masked=masked)
    assert t_got == t and survivors == n - dropped
    if k is not None and aborted:  # SecAgg+: a dropped client may have fewer than t surviving neighbours.
      continue
    assert not aborted
    np.testing.assert_array_equal(total, q[alive == 1].sum(0) % 2**bits)
    recovered += 1
  assert recovered >= 2


def test_fewer_than_t_survivors_abort():
  n, bits = 6, 16
  q = np.random.default_rng(0).integers(0, 2**bits, size=(n, 10))
  alive = np.array([1, 0, 1, 0, 1, 0], np.int32)  # 3 survivors, t = ceil(0.6 * 6) = 4.
  total, aborted, survivors, t = _round(q, alive, bits=bits, threshold=0.6, k=None, seed=0)
  assert aborted and survivors == 3 and t == 4 and not total.any()


def test_a_wrong_share_breaks_the_sum():
  # The server really unmasks with the reconstructed secrets: one survivor's shares off by one give garbage.
  n, bits = 5, 16
  q = np.random.default_rng(1).integers(0, 2**bits, size=(n, 20))
  alive = np.array([1, 1, 0, 1, 1], np.int32)
  total, aborted, _, _ = _round(q, alive, bits=bits, threshold=0.6, k=None, seed=0, corrupt=True)
  assert not aborted
  assert np.mean(total == q[alive == 1].sum(0) % 2**bits) < 0.2


def test_bits_per_client_counts_the_masked_vector_and_the_shares():
  secagg = protocol.bits_per_client(d=1000, bits=16, n=100, k=None)
  plus = protocol.bits_per_client(d=1000, bits=16, n=100, k=8)
  assert secagg['masked'] == plus['masked'] == 16_000
  assert secagg['shares'] == 31 * (2 * 99 + 100) and plus['shares'] == 31 * (2 * 8 + 9)
