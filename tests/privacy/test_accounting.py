"""Accountants vs published epsilons, tensorflow-privacy, dp-accounting composition and the exact Gaussian."""

import math

import dp_accounting
import numpy as np
import pytest
from scipy import optimize
from scipy import stats

from tff_fl.privacy import accounting
from tff_fl.privacy import sampling

PUBLISHED = [  # tensorflow-privacy compute_dp_sgd_privacy: (n, batch, z, epochs, delta) -> (epsilon, RDP order).
    ((60000, 150, 1.3, 15, 1e-5), 0.7242234026109595, 19.0),
    ((100000, 100, 1.0, 30, 1e-7), 1.4154988495444842, None),
]


@pytest.mark.parametrize('args, epsilon, order', PUBLISHED)
def test_dp_sgd_epsilon_matches_published_values(args, epsilon, order):
  eps, best_order = accounting.dp_sgd_epsilon(*args)
  assert abs(eps - epsilon) < 1e-6
  if order is not None:
    assert best_order == order


@pytest.mark.parametrize('args, epsilon, order', PUBLISHED)
def test_dp_sgd_epsilon_matches_tensorflow_privacy(args, epsilon, order):
  del epsilon, order
  lib = pytest.importorskip('tensorflow_privacy.privacy.analysis.compute_dp_sgd_privacy_lib')
  ref_eps, ref_order = lib.compute_dp_sgd_privacy(*args)
  eps, best_order = accounting.dp_sgd_epsilon(*args)
  assert abs(eps - ref_eps) < 1e-9 and best_order == ref_order


def _exact_gaussian_epsilon(sigma, delta):
  """Tight epsilon of the Gaussian mechanism (sensitivity 1), Balle & Wang (2018), Theorem 8."""
  def delta_of(eps):
    return stats.norm.cdf(0.5 / sigma - eps * sigma) - math.exp(eps) * stats.norm.cdf(-0.5 / sigma - eps * sigma)
  return optimize.brentq(lambda e: delta_of(e) - delta, 1e-9, 200.0, xtol=1e-12)


def test_example_level_epsilon_brackets_the_exact_gaussian(z=3.0, epochs=10):
  # T Gaussian releases with noise z/2 (microbatching doubles sensitivity) = one with sigma = z / 2 / sqrt(T).
  exact = _exact_gaussian_epsilon(z / 2 / math.sqrt(epochs), 1e-5)
  pld_eps = accounting.example_level_epsilon(z, epochs, 1e-5, accountant='pld')
  rdp_eps = accounting.example_level_epsilon(z, epochs, 1e-5, accountant='rdp')
  assert exact <= pld_eps <= exact * (1 + 1e-3)  # PLD: pessimistic and tight.
  assert rdp_eps > pld_eps  # RDP: a valid but looser upper bound.


def test_example_level_epsilon_matches_tensorflow_privacy_statement_convention():
  lib = pytest.importorskip('tensorflow_privacy.privacy.analysis.compute_dp_sgd_privacy_lib')
  reference = lib._compute_dp_sgd_example_privacy  # pylint: disable=protected-access  (statement's own helper)
  for z, epochs in [(1.1, 3), (2.0, 12.5)]:
    ref = reference(epochs, z, 1e-6, used_microbatching=True)
    assert accounting.example_level_epsilon(z, epochs, 1e-6) == pytest.approx(ref, rel=1e-12)
  assert accounting.example_level_epsilon(1.0, 0, 1e-5) == 0.0
  assert accounting.example_level_epsilon(0.0, 1, 1e-5) == math.inf


def _direct_epsilon(sampler, z, rounds, delta, kind):
  acc = accounting.make_accountant(kind, sampler.neighboring_relation)
  return acc.compose(sampler.dp_event(z, rounds)).get_epsilon(delta)


@pytest.mark.parametrize('rounds', [1, 17, 400])
def test_poisson_client_level_rdp_equals_direct_dp_accounting(rounds):
  sampler = sampling.PoissonSampler(num_clients=2000, rate=0.01)
  acc = accounting.ClientLevelAccountant(sampler, 1.1)
  expected = dp_accounting.rdp.RdpAccountant().compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1)), rounds)).get_epsilon(1e-5)
  assert acc.epsilon(rounds, 1e-5) == pytest.approx(expected, rel=1e-12)


def test_poisson_client_level_pld_equals_pld_accountant_and_beats_rdp():
  sampler = sampling.PoissonSampler(num_clients=1000, rate=0.02)
  acc = accounting.ClientLevelAccountant(sampler, 1.0, accountant='pld')
  rdp_acc = accounting.ClientLevelAccountant(sampler, 1.0)
  assert acc.epsilon(300, 1e-5) == pytest.approx(_direct_epsilon(sampler, 1.0, 300, 1e-5, 'pld'), rel=1e-6)
  for rounds in (5, 300):
    assert acc.epsilon(rounds, 1e-5) < rdp_acc.epsilon(rounds, 1e-5)


def test_fixed_size_client_level_uses_sampling_without_replacement():
  sampler = sampling.FixedSizeSampler(num_clients=500, clients_per_round=10)
  acc = accounting.ClientLevelAccountant(sampler, 1.0)
  direct = _direct_epsilon(sampler, 1.0, 50, 1e-5, 'rdp')
  assert acc.epsilon(50, 1e-5) == pytest.approx(direct, rel=1e-12)
  # Same expected cohort, different sampling scheme, different guarantee: the event really is the sampler's.
  poisson = accounting.ClientLevelAccountant(sampling.PoissonSampler(500, 10 / 500), 1.0)
  assert abs(poisson.epsilon(50, 1e-5) - acc.epsilon(50, 1e-5)) > 1e-3


def test_tree_accounting_matches_tensorflow_privacy_tree_restart_accountant():
  analysis = pytest.importorskip('tensorflow_privacy.privacy.analysis.tree_aggregation_accountant')
  sampler = sampling.CyclicSampler(num_clients=100, clients_per_round=10)  # 10 rounds per epoch.
  acc = accounting.ClientLevelAccountant(sampler, 2.0, mechanism='tree')
  orders = accounting.DEFAULT_ORDERS
  for rounds, trees in [(7, [7]), (10, [10]), (25, [10, 10, 5])]:
    rdp_values = analysis.compute_rdp_tree_restart(2.0, trees, orders)
    expected = dp_accounting.rdp.compute_epsilon(orders, rdp_values, 1e-5)[0]
    assert acc.epsilon(rounds, 1e-5) == pytest.approx(expected, rel=1e-10)


def test_epsilon_edge_cases():
  acc = accounting.ClientLevelAccountant(sampling.PoissonSampler(100, 0.1), 0.0)
  assert acc.epsilon(0, 1e-5) == 0.0
  assert acc.epsilon(1, 1e-5) == math.inf
  eps = [accounting.ClientLevelAccountant(sampling.PoissonSampler(100, 0.1), 1.0).epsilon(t, 1e-5)
         for t in (1, 2, 10, 100)]
  assert np.all(np.diff(eps) > 0)


@pytest.mark.parametrize('sampler, kwargs, match', [
    (sampling.FixedSizeSampler(10, 2), dict(accountant='pld'), 'accountant=pld supports only Poisson'),
    (sampling.PoissonSampler(10, 0.2), dict(mechanism='tree'), 'tree aggregation is accounted only with cyclic'),
    (sampling.CyclicSampler(10, 2), dict(), 'tree aggregation is accounted only with cyclic'),
    (sampling.CyclicSampler(10, 2), dict(mechanism='tree', accountant='pld'), 'accountant=pld'),
    (sampling.PoissonSampler(10, 0.2), dict(accountant='moments'), 'accountant must be one of rdp|pld'),
    (sampling.PoissonSampler(10, 0.2), dict(noise_multiplier=-1.0), 'noise_multiplier'),
])
def test_mismatched_accounting_is_refused(sampler, kwargs, match):
  args = dict(noise_multiplier=1.0)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    accounting.ClientLevelAccountant(sampler, **args)


def test_bad_dp_sgd_arguments():
  with pytest.raises(ValueError, match='batch_size'):
    accounting.dp_sgd_epsilon(100, 200, 1.0, 1, 1e-5)
  with pytest.raises(ValueError, match='target_delta'):
    accounting.dp_sgd_epsilon(100, 10, 1.0, 1, 1.5)
