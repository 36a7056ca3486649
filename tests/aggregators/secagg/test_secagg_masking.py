"""Masks: deterministic PRG, uniform masked uploads (chi-square), symmetric DH pair seeds, the SecAgg+ graph."""

import numpy as np
import pytest
from scipy import stats
import tensorflow as tf

from tff_fl.aggregators.secagg import masking
from tff_fl.aggregators.secagg import protocol
from tff_fl.aggregators.secagg import shamir


def test_prg_is_deterministic_in_range_and_seed_dependent():
  a = masking.expand(tf.constant(12345, tf.int64), masking.PAIR_TAG, 1000, 12).numpy()
  np.testing.assert_array_equal(a, masking.expand(tf.constant(12345, tf.int64), masking.PAIR_TAG, 1000, 12).numpy())
  assert a.min() >= 0 and a.max() < 2**12
  assert np.mean(a == masking.expand(tf.constant(12346, tf.int64), masking.PAIR_TAG, 1000, 12).numpy()) < 0.01


def test_pair_seeds_agree_and_match_python_diffie_hellman():
  sk = np.array([3, 77, 2**30 + 5, shamir.PRIME - 2], np.int64)
  pk = masking.public_key(tf.constant(sk)).numpy()
  np.testing.assert_array_equal(pk, [pow(masking.GENERATOR, int(s), shamir.PRIME) for s in sk])
  for u in range(4):
    np.testing.assert_array_equal(masking.agree(sk[u], pk).numpy(),
                                  [pow(int(p), int(sk[u]), shamir.PRIME) for p in pk])
    for v in range(4):
      assert masking.agree(sk[u], pk[v]).numpy() == masking.agree(sk[v], pk[u]).numpy()


@pytest.mark.parametrize('bits,k', [(8, None), (16, None), (32, 4)])
def test_a_masked_upload_is_uniform(bits, k):
  # Worst case for hiding: the client's value is constant (all zeros). Its masked upload must look uniform on
  # Z_{2^b}: chi-square over 64 equal bins of 20,000 coordinates.
  d, n, max_clients = 20_000, 5, 8
  alive = np.array([1] * n + [0] * (max_clients - n), np.int32)
  y, _ = protocol.client_upload(tf.zeros([d], tf.int64), 2, n, alive, bits=bits, threshold=0.6, k=k, seed=1,
                                round_num=3, max_clients=max_clients)
  counts = np.bincount((y.numpy() * 64) >> bits, minlength=64)
  assert stats.chisquare(counts).pvalue > 1e-3
  # The self mask alone already hides it; a different seed gives an unrelated upload.
  y2, _ = protocol.client_upload(tf.zeros([d], tf.int64), 2, n, alive, bits=bits, threshold=0.6, k=k, seed=2,
                                 round_num=3, max_clients=max_clients)
  assert np.mean(y.numpy() == y2.numpy()) < 0.01 + 2.0**-bits * 2


@pytest.mark.parametrize('n,k', [(10, 2), (10, 4), (11, 3), (6, 8)])
def test_secagg_plus_graph_is_a_symmetric_regular_ring(n, k):
  adjacency = masking.graph(n, k, tf.constant([5, 6], tf.int64)).numpy()
  assert (adjacency == adjacency.T).all() and not adjacency.diagonal().any()
  np.testing.assert_array_equal(adjacency.sum(1), protocol.degree(n, k))
  reach = np.eye(n, dtype=bool)
  for _ in range(n):
    reach = reach | (reach.astype(int) @ adjacency.astype(int) > 0)
  assert reach.all()  # Connected.
  complete = masking.graph(n, None, tf.constant([5, 6], tf.int64)).numpy()
  assert complete.sum() == n * (n - 1)
