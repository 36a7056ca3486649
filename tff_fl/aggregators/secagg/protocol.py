"""The SecAgg / SecAgg+ roles of one round, in int64 TensorFlow ops (eager or inside the round's graph).

Round r with n sampled clients at positions 0..n-1 (padded to `max_clients` = N) and a public graph G (complete for
SecAgg, a random Harary graph of degree ~k for SecAgg+, `masking.graph`):

  1. advertise   client v draws a DH secret key sk_v and a self-mask seed b_v, and publishes pk_v = g^sk_v.
  2. share       v Shamir-shares sk_v and b_v with threshold t among its holders H(v) = {v} + G-neighbours of v.
  3. mask        client u uploads y_u = q_u + PRG(b_u) + sum_{v ~ u} sign(u, v) PRG(pk_v^sk_u)  (mod 2^b).
     -- clients drop here: after masking, before the upload reaches the server --
  4. unmask      the server announces the survivors U; each survivor u sends, for every owner v it holds shares
                 of, its share of b_v if v in U and of sk_v if v dropped (never both for one v).
  5. recover     for each owner v the server takes the shares of its t lowest-position surviving holders (abort if
                 fewer than t survive), reconstructs b_v (v in U) or sk_v (v dropped), and computes
                 sum_{u in U} y_u - sum_{u in U} PRG(b_u) - sum_{v dropped} sum_{u in U, u ~ v} sign(u, v) PRG(pk_u^sk_v)
                 = sum_{u in U} q_u  (mod 2^b).

Thresholds: t = ceil(threshold * |H(v)|): ceil(threshold * n) for SecAgg; ceil(threshold * (degree + 1)) for
SecAgg+. Simulation shortcuts (say so when reporting): every client's round secrets (sk, b, its sharing
polynomials) are rows of one stateless draw keyed by (seed, round), so a client's step-3 and step-4 messages can be
computed where the engine runs that client, and dropped clients' step-1/2 messages are replayed from the same
draw; the server's recovery uses only secrets it reconstructs from t shares (a wrong share or too few would break
the exact sum, which the tests check). The DH group is a 31-bit toy (`masking` module docstring).

Shapes: q, y: int64[d]; shares row of a holder: int64[N] (its share for each owner, 0 where it holds none);
the server's share matrix int64[N holders, N owners]; alive: int32[N] (1 at survivors' positions).
"""

import math
from typing import Optional

import tensorflow as tf

from tff_fl.aggregators.secagg import masking
from tff_fl.aggregators.secagg import shamir

_SECRETS_TAG, _POLY_TAG, _GRAPH_TAG = 11, 12, 13


def threshold_count(threshold: float, holders: int) -> int:
  """t = ceil(threshold * holders), at least 1 (Python ints; the graph version is `thresholds`)."""
  return max(1, math.ceil(threshold * holders - 1e-9))


def degree(n: int, k: Optional[int]) -> int:
  """Neighbours per client: n - 1 for SecAgg (k None), min(2 * ceil(k / 2), n - 1) for SecAgg+."""
  return n - 1 if k is None else min(2 * ((k + 1) // 2), n - 1)


def _key(seed, round_num, tag):
  return tf.stack([tf.cast(seed, tf.int64), tf.cast(round_num, tf.int64) * 64 + tag])


def round_secrets(seed, round_num, max_clients: int):
  """(sk int64[N] in [1, p-1], b int64[N] in [0, p-1]): every position's secret key and self-mask seed."""
  draw = tf.random.stateless_uniform([2, max_clients], _key(seed, round_num, _SECRETS_TAG), minval=0,
                                     maxval=shamir.PRIME - 1, dtype=tf.int64)
  return draw[0] + 1, draw[1]


def round_graph(seed, round_num, n, k: Optional[int], max_clients: int):
  """bool[N, N]: the public graph among the n sampled positions (False on padding)."""
  adjacency = masking.graph(n, k, _key(seed, round_num, _GRAPH_TAG))
  pad = max_clients - tf.cast(n, tf.int32)
  return tf.pad(adjacency, [[0, pad], [0, pad]])


def thresholds(adjacency, n, threshold: float):
  """int32 scalar t from the graph's holder count (degree + 1), as `threshold_count`."""
  holders = tf.reduce_max(tf.reduce_sum(tf.cast(adjacency, tf.int32), axis=1)) + 1
  holders = tf.minimum(holders, tf.cast(n, tf.int32))
  return tf.maximum(1, tf.cast(tf.math.ceil(threshold * tf.cast(holders, tf.float64) - 1e-9), tf.int32))


def _polynomials(seed, round_num, secrets, t, which: int):
  return shamir.random_coefficients(secrets, t, _key(seed, round_num, _POLY_TAG + 16 * which))


def client_mask(q, index, n, *, bits: int, threshold: float, k: Optional[int], seed, round_num, max_clients: int):
  """y int64[d]: step 3 of the client at `index` (self mask and pairwise masks with its graph neighbours)."""
  del threshold
  index = tf.cast(index, tf.int32)
  d = tf.size(q)
  sk, b = round_secrets(seed, round_num, max_clients)
  adjacency = round_graph(seed, round_num, n, k, max_clients)
  y = masking.mod_bits(tf.cast(q, tf.int64) + masking.expand(b[index], masking.SELF_TAG, d, bits), bits)
  neighbours = tf.reshape(tf.where(adjacency[index]), [-1])
  pair_seeds = masking.agree(sk[index], masking.public_key(tf.gather(sk, neighbours)))

  def add_pair(j, y):
    mask = masking.expand(pair_seeds[j], masking.PAIR_TAG, d, bits)
    return j + 1, masking.mod_bits(y + masking.sign(index, neighbours[j]) * mask, bits)

  return tf.while_loop(lambda j, _: j < tf.size(neighbours), add_pair, (tf.constant(0), y))[1]


def client_shares(index, n, alive, *, threshold: float, k: Optional[int], seed, round_num, max_clients: int,
                  bits: Optional[int] = None):
  """int64[N]: step 4 of the client at `index`: for each owner v it holds shares of, its share of b_v (v in U,
  `alive`) or of sk_v (v dropped); 0 for owners it holds none of."""
  del bits
  index = tf.cast(index, tf.int32)
  sk, b = round_secrets(seed, round_num, max_clients)
  adjacency = round_graph(seed, round_num, n, k, max_clients)
  t = thresholds(adjacency, n, threshold)
  x = tf.cast(index, tf.int64)[tf.newaxis] + 1
  share_b = shamir.evaluate(_polynomials(seed, round_num, b, t, 0), x)[0]
  share_sk = shamir.evaluate(_polynomials(seed, round_num, sk, t, 1), x)[0]
  holds = tf.logical_or(adjacency[:, index], tf.equal(tf.range(max_clients), index))
  holds = tf.logical_and(holds, tf.range(max_clients) < tf.cast(n, tf.int32))
  shares = tf.where(tf.cast(alive, tf.bool), share_b, share_sk)
  return tf.where(holds, shares, tf.zeros_like(shares))


def client_upload(q, index, n, alive, **kwargs):
  """(y int64[d], shares int64[N]) of the client at `index` (steps 3 and 4); `alive` int32[N] announces U."""
  return client_mask(q, index, n, **kwargs), client_shares(index, n, alive, **kwargs)


def recoverable(alive, n, *, threshold: float, k: Optional[int], seed, round_num, max_clients: int, **unused):
  """(aborted bool, survivors int32, t int32, candidates bool[N holder, N owner]): the server's abort rule of
  step 5: abort unless every sampled owner has >= t surviving holders (and at least t clients survive)."""
  del unused
  n = tf.cast(n, tf.int32)
  alive = tf.cast(alive, tf.bool)
  sampled = tf.range(max_clients) < n
  adjacency = round_graph(seed, round_num, n, k, max_clients)
  t = thresholds(adjacency, n, threshold)
  holders = tf.logical_and(tf.logical_or(adjacency, tf.eye(max_clients, dtype=tf.bool)), sampled[:, tf.newaxis])
  candidates = tf.logical_and(holders, alive[:, tf.newaxis])  # [holder, owner]
  counts = tf.reduce_sum(tf.cast(candidates, tf.int32), axis=0)
  survivors = tf.reduce_sum(tf.cast(tf.logical_and(alive, sampled), tf.int32))
  aborted = tf.logical_or(tf.reduce_any(tf.logical_and(sampled, counts < t)), survivors < t)
  return aborted, survivors, t, candidates


def server_recover(masked_sum, shares, alive, n, *, bits: int, threshold: float, k: Optional[int], seed,
                   round_num, max_clients: int):
  """(sum_{u in U} q_u mod 2^b int64[d] (zeros if aborted), aborted bool, survivors int32, t int32) (step 5)."""
  d = tf.size(masked_sum)
  n = tf.cast(n, tf.int32)
  alive = tf.cast(alive, tf.bool)
  positions = tf.range(max_clients)
  sampled = positions < n
  adjacency = round_graph(seed, round_num, n, k, max_clients)
  aborted, survivors, t, candidates = recoverable(alive, n, threshold=threshold, k=k, seed=seed, round_num=round_num,
                                                  max_clients=max_clients)

  def recover():
    # The t lowest-position surviving holders of each owner (stable sort puts candidates first).
    chosen = tf.argsort(tf.cast(tf.logical_not(tf.transpose(candidates)), tf.int32), axis=1, stable=True)[:, :t]
    owner = tf.broadcast_to(positions[:, tf.newaxis], tf.shape(chosen))
    values = tf.gather_nd(shares, tf.stack([chosen, owner], axis=-1))
    if k is None:  # SecAgg: every owner has the same surviving holders, so one set of Lagrange coefficients.
      lam = shamir.lagrange_at_zero(tf.cast(chosen[0], tf.int64) + 1)[tf.newaxis, :]
    else:
      lam = shamir.lagrange_at_zero(tf.cast(chosen, tf.int64) + 1)
    secrets = shamir.mod(tf.reduce_sum(shamir.mul(lam, values), axis=-1))  # b_v (v alive) or sk_v (v dropped)
    sk_all, _ = round_secrets(seed, round_num, max_clients)
    public = masking.public_key(sk_all)  # The keys advertised in step 1 (the server's only use of the draw).
    total = masking.mod_bits(tf.cast(masked_sum, tf.int64), bits)
    live = tf.reshape(tf.where(tf.logical_and(alive, sampled)), [-1])

    def remove_self(j, total):
      return j + 1, masking.mod_bits(total - masking.expand(secrets[live[j]], masking.SELF_TAG, d, bits), bits)

    total = tf.while_loop(lambda j, _: j < tf.size(live), remove_self, (tf.constant(0), total))[1]
    dropped = tf.logical_and(sampled, tf.logical_not(alive))
    pairs = tf.cast(tf.where(tf.logical_and(tf.logical_and(adjacency, alive[:, tf.newaxis]),
                                            dropped[tf.newaxis, :])), tf.int32)  # rows (u alive, v dropped)

    pair_seeds = masking.agree(tf.gather(secrets, pairs[:, 1]), tf.gather(public, pairs[:, 0]))  # pk_u^sk_v
    signs = masking.sign(pairs[:, 0], pairs[:, 1])

    def remove_pair(j, total):
      mask = masking.expand(pair_seeds[j], masking.PAIR_TAG, d, bits)
      return j + 1, masking.mod_bits(total - signs[j] * mask, bits)

    return tf.while_loop(lambda j, _: j < tf.shape(pairs)[0], remove_pair, (tf.constant(0), total))[1]

  result = tf.cond(aborted, lambda: tf.zeros([d], tf.int64), recover)
  return result, aborted, survivors, t


def bits_per_client(d: int, bits: int, n: int, k: Optional[int]) -> dict:
  """Upload of one surviving client, counting field elements at 31 bits (encryption/signature overhead not
  counted): masked vector d*b; public key; 2 shares (sk, b) to each of its degree holders (the server relays
  them); one share per owner it holds for in step 4 (degree + 1 owners, itself included)."""
  deg = degree(n, k)
  field = 31
  masked = d * bits
  keys = field
  shares = 2 * deg * field + (deg + 1) * field
  return dict(masked=masked, keys=keys, shares=shares, total=masked + keys + shares)
