"""Masks of SecAgg in Z_{2^b}: PRG expansion of seeds, simulated key agreement, the pairwise sign and the graph.

* PRG: `expand(seed, tag, d, bits)` = int64[d] uniform in [0, 2^b), TF's stateless Philox generator keyed by
  (seed, tag); the same (seed, tag) always gives the same mask, in any graph or eagerly.
* Key agreement: Diffie-Hellman in Z_p* (p = 2^31 - 1, generator 7): public key g^sk, shared seed
  s_uv = pk_v^sk_u = pk_u^sk_v. This toy group (31-bit keys) keeps the protocol's data flow exact (the server can
  recompute every pair seed of a dropped client from its reconstructed secret key and the public keys) but has no
  cryptographic strength: it is a simulation.
* Pairwise sign: client u adds +PRG(s_uv) for every neighbour v > u and -PRG(s_uv) for v < u, so each pair's two
  masks cancel in the sum mod 2^b.
* Graph: SecAgg masks with every other sampled client (complete graph); SecAgg+ (Bell et al. 2020) with the
  neighbours of a public random Harary graph: clients on a ring in a seeded random order, each linked to the
  ceil(k/2) nearest on either side (degree 2*ceil(k/2) >= k; complete when that reaches n - 1).
"""

import tensorflow as tf

from tff_fl.aggregators.secagg import shamir

GENERATOR = 7
SELF_TAG, PAIR_TAG = 1, 2
MAX_BITS = 32  # Masked values and their sums stay far below 2^63 in int64.


def expand(seed, tag: int, d: int, bits: int):
  """int64[d] uniform in [0, 2^bits): the mask PRG(seed) (seed an int64 scalar)."""
  key = tf.stack([tf.cast(seed, tf.int64), tf.constant(tag, tf.int64)])
  return tf.random.stateless_uniform([d], key, minval=0, maxval=2**bits, dtype=tf.int64)


def public_key(secret_key):
  return shamir.power(tf.fill(tf.shape(secret_key), tf.constant(GENERATOR, tf.int64)), secret_key)


def agree(secret_key, public_keys):
  """int64[...]: pair seeds pk^sk mod p of one secret key with each public key."""
  return shamir.power(public_keys, secret_key)


def sign(u, v):
  """+1 where u < v, -1 where u > v (0 on the diagonal): client u's sign for its mask with v."""
  return tf.sign(tf.cast(v, tf.int64) - tf.cast(u, tf.int64))


def graph(n, k, seed):
  """bool[n, n] symmetric adjacency without self loops; k = None or k >= n - 1: complete (SecAgg)."""
  n = tf.cast(n, tf.int32)
  if k is None:
    return tf.logical_not(tf.eye(n, dtype=tf.bool))
  order = tf.argsort(tf.random.stateless_uniform(tf.reshape(n, [1]), tf.cast(seed, tf.int64)))
  position = tf.math.invert_permutation(order)
  gap = tf.abs(position[:, tf.newaxis] - position[tf.newaxis, :])
  ring = tf.minimum(gap, n - gap)
  half = (k + 1) // 2
  return tf.logical_and(ring >= 1, ring <= half)


def mod_bits(x, bits: int):
  return tf.math.floormod(x, tf.constant(2**bits, tf.int64))
