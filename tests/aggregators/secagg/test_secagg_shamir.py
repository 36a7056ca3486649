"""Shamir t-of-n over Z_p against Python-integer arithmetic: any t shares give the secret, t - 1 do not."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tff_fl.aggregators.secagg import shamir

P = shamir.PRIME


def _share(secrets, t, n, seed):
  coeffs = shamir.random_coefficients(tf.constant(secrets, tf.int64), t, tf.constant([seed, 0], tf.int64))
  shares = shamir.evaluate(coeffs, tf.range(1, n + 1, dtype=tf.int64)).numpy()  # [n holders, S secrets]
  return coeffs.numpy(), shares


def test_field_ops_match_python_integers():
  rng = np.random.default_rng(0)
  a = rng.integers(0, P, 50)
  e = rng.integers(0, P, 50)
  np.testing.assert_array_equal(shamir.power(a, e).numpy(), [pow(int(x), int(y), P) for x, y in zip(a, e)])
  nonzero = a[a != 0]
  np.testing.assert_array_equal(shamir.mul(nonzero, shamir.inverse(nonzero)).numpy(), np.ones_like(nonzero))


def test_shares_are_the_polynomial_evaluated_with_python_integers():
  coeffs, shares = _share([5, P - 1, 123456789], t=4, n=6, seed=1)
  for s in range(3):
    for h in range(6):
      x = h + 1
      assert shares[h, s] == sum(int(c) * pow(x, j, P) for j, c in enumerate(coeffs[s])) % P
  np.testing.assert_array_equal(coeffs[:, 0], [5, P - 1, 123456789])


@pytest.mark.parametrize('t,n', [(1, 1), (2, 3), (3, 5), (5, 9)])
def test_any_t_shares_reconstruct_the_secret(t, n):
  secrets = [0, 1, 987654321, P - 1]
  _, shares = _share(secrets, t, n, seed=t * 10 + n)
  for holders in itertools.islice(itertools.combinations(range(n), t), 20):
    holders = np.array(holders)
    xs = np.broadcast_to(holders + 1, (len(secrets), t))
    got = shamir.reconstruct(shares[holders].T, xs).numpy()
    np.testing.assert_array_equal(got, secrets)


def test_t_minus_one_shares_do_not_determine_the_secret():
  # 400 sharings of the same secret with t = 4: interpolating the first 3 shares at 0 gives values spread over the
  # field (a fresh uniform value each time), essentially never the secret.
  t, n, secret, trials = 4, 6, 424242, 400
  secrets = np.full(trials, secret)
  _, shares = _share(secrets, t, n, seed=7)
  xs = np.broadcast_to(np.arange(1, t), (trials, t - 1))
  guesses = shamir.reconstruct(shares[:t - 1].T, xs).numpy()
  assert np.mean(guesses == secret) < 0.01
  assert len(np.unique(guesses)) > 0.99 * trials
  # ...while the t-th share pins it down.
  np.testing.assert_array_equal(shamir.reconstruct(shares[:t].T, np.broadcast_to(np.arange(1, t + 1), (trials, t))),
                                secrets)
  # And any secret is consistent with the t - 1 shares: the polynomial through (0, s') and them has degree t - 1.
  other = 31337
  xs_all = list(range(t))
  values = [other] + [int(v) for v in shares[:t - 1, 0]]
  # Lagrange at x = t (the t-th holder) for the polynomial through xs_all: a valid t-th share for secret s'.
  fake = 0
  for j, (xj, vj) in enumerate(zip(xs_all, values)):
    num = den = 1
    for m, xm in enumerate(xs_all):
      if m != j:
        num, den = num * (t - xm) % P, den * (xj - xm) % P
    fake = (fake + vj * num * pow(den, P - 2, P)) % P
  rebuilt = shamir.reconstruct(np.array([[*shares[:t - 1, 0], fake]]), np.array([np.arange(1, t + 1)]))
  assert int(rebuilt.numpy()[0]) == other
