"""Shamir t-of-n secret sharing over the prime field Z_p, p = 2^31 - 1, in int64 TensorFlow ops.

A secret s in Z_p is hidden as f(0) of a random polynomial f(x) = s + a_1 x + ... + a_{t-1} x^{t-1} over Z_p; the
share of holder j is (x_j, f(x_j)) with x_j = j + 1 != 0. Any t shares give s back by Lagrange interpolation at 0,
s = sum_j lambda_j f(x_j), lambda_j = prod_{m != j} x_m / (x_m - x_j); any t - 1 shares are uniformly distributed
whatever s is (they determine nothing). Every product of two field elements is < 2^62, so int64 never overflows;
every function works eagerly and inside a graph (the round's TF computations), on vectors of secrets at once.

Shapes: `coeffs` int64[S, t] (column 0 the secrets), `xs` int64[H] holder points, shares int64[H, S].
"""

import tensorflow as tf

PRIME = 2**31 - 1  # Mersenne prime; 7 generates its multiplicative group (see masking.GENERATOR).


def mod(x):
  return tf.math.floormod(x, tf.constant(PRIME, tf.int64))


def mul(a, b):
  return mod(tf.cast(a, tf.int64) * tf.cast(b, tf.int64))


def power(base, exponent):
  """base^exponent mod p elementwise (square and multiply, unrolled over the 31 exponent bits; 0 <= exponent < 2^31).

  Unrolled rather than a `tf.while_loop` with a constant bound, which TFF's runtime returned unexecuted (all ones).
  """
  base = mod(tf.cast(base, tf.int64))
  exponent = tf.cast(exponent, tf.int64) + tf.zeros_like(base)
  result = tf.ones_like(base)
  for bit in range(31):
    result = tf.where(tf.equal(tf.bitwise.bitwise_and(tf.bitwise.right_shift(exponent, bit), 1), 1),
                      mul(result, base), result)
    base = mul(base, base)
  return result


def inverse(a):
  """a^-1 mod p (Fermat), for a != 0 mod p."""
  return power(a, PRIME - 2)


def random_coefficients(secrets, t: int, seed):
  """int64[S, t]: the secrets in column 0, t - 1 uniform field elements after them (stateless seed int64[2])."""
  secrets = mod(tf.cast(secrets, tf.int64))
  rest = tf.random.stateless_uniform(tf.stack([tf.size(secrets), t - 1]), seed, minval=0, maxval=PRIME,
                                     dtype=tf.int64)
  return tf.concat([secrets[:, tf.newaxis], rest], axis=1)


def evaluate(coeffs, xs):
  """int64[H, S]: f_s(x_h) for every polynomial s (rows of `coeffs`) at every point h (Horner, mod p)."""
  coeffs = tf.cast(coeffs, tf.int64)
  xs = tf.cast(xs, tf.int64)[:, tf.newaxis]
  t = tf.shape(coeffs)[1]

  def body(k, acc):
    return k + 1, mod(mul(acc, xs) + coeffs[:, t - 1 - k][tf.newaxis, :])

  acc = tf.zeros(tf.stack([tf.size(xs), tf.shape(coeffs)[0]]), tf.int64)
  return tf.while_loop(lambda k, _: k < t, body, (tf.constant(0), acc))[1]


def lagrange_at_zero(xs):
  """int64[..., t]: lambda_j for each row of distinct nonzero points `xs` [..., t], so f(0) = sum_j lambda_j f(x_j)."""
  xs = mod(tf.cast(xs, tf.int64))
  t = tf.shape(xs)[-1]
  num = tf.ones_like(xs)
  den = tf.ones_like(xs)

  def body(m, num, den):
    xm = xs[..., m][..., tf.newaxis]
    other = tf.not_equal(tf.range(t), m)
    num = tf.where(other, mul(num, xm), num)
    den = tf.where(other, mul(den, mod(xm - xs)), den)
    return m + 1, num, den

  _, num, den = tf.while_loop(lambda m, *_: m < t, body, (tf.constant(0), num, den))
  return mul(num, inverse(den))


def reconstruct(shares, xs):
  """int64[...]: f(0) from shares [..., t] of one secret each at points `xs` [..., t] (broadcast)."""
  lam = lagrange_at_zero(xs)
  return mod(tf.reduce_sum(mul(lam, shares), axis=-1))  # Each term < p, so the sum < t * p < 2^63.
