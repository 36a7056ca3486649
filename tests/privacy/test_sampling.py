"""Client samplers: empirical rates/sizes against their definitions, and the dp-accounting event each reports."""

import dp_accounting
import numpy as np
import pytest

from tff_fl.privacy import sampling

IDS = [f'client_{i}' for i in range(400)]


def test_poisson_empirical_rate_and_per_client_inclusion():
  q, rounds = 0.05, 300
  sampler = sampling.PoissonSampler(len(IDS), q, seed=1)
  counts = {c: 0 for c in IDS}
  sizes = []
  for r in range(rounds):
    cohort = sampler.sample(r, IDS)
    assert len(set(cohort)) == len(cohort) and set(cohort) <= set(IDS)
    sizes.append(len(cohort))
    for c in cohort:
      counts[c] += 1
  n = len(IDS)
  rate = np.sum(sizes) / (n * rounds)
  assert abs(rate - q) < 4 * np.sqrt(q * (1 - q) / (n * rounds))
  assert np.var(sizes) > 0  # Cohort size is random: Binomial(n, q).
  assert np.var(sizes) == pytest.approx(n * q * (1 - q), rel=0.3)
  per_client = np.array(list(counts.values())) / rounds
  assert abs(per_client.mean() - q) < 0.005 and per_client.max() < q + 6 * np.sqrt(q * (1 - q) / rounds)


def test_fixed_size_gives_exactly_k_distinct_clients_uniformly():
  k, rounds = 20, 200
  sampler = sampling.FixedSizeSampler(len(IDS), k, seed=2)
  counts = dict.fromkeys(IDS, 0)
  for r in range(rounds):
    cohort = sampler.sample(r, IDS)
    assert len(cohort) == k == len(set(cohort))
    for c in cohort:
      counts[c] += 1
  inclusion = np.array(list(counts.values())) / rounds
  p = k / len(IDS)
  assert abs(inclusion.mean() - p) < 1e-12  # Exactly k per round.
  assert inclusion.max() < p + 6 * np.sqrt(p * (1 - p) / rounds)


def test_cohorts_are_a_function_of_seed_and_round():
  a, b = sampling.FixedSizeSampler(len(IDS), 5, seed=3), sampling.FixedSizeSampler(len(IDS), 5, seed=3)
  assert a.sample(7, IDS) == b.sample(7, IDS)
  assert a.sample(7, IDS) != a.sample(8, IDS)
  assert a.sample(7, IDS) != sampling.FixedSizeSampler(len(IDS), 5, seed=4).sample(7, IDS)


def test_cyclic_epochs_are_disjoint_and_repeat():
  sampler = sampling.CyclicSampler(num_clients=23, clients_per_round=5, seed=0)
  ids = IDS[:23]
  assert sampler.cohorts_per_epoch == 4
  epoch = [sampler.sample(r, ids) for r in range(4)]
  flat = [c for cohort in epoch for c in cohort]
  assert len(flat) == len(set(flat)) == 20  # Every client at most once per epoch.
  assert [sampler.sample(r + 4, ids) for r in range(4)] == epoch


def test_each_sampler_reports_its_own_event():
  gauss = dp_accounting.GaussianDpEvent(1.3)
  poisson = sampling.PoissonSampler(100, 0.1)
  assert poisson.dp_event(1.3, 12) == dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(0.1, gauss), 12)
  assert poisson.neighboring_relation == dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
  fixed = sampling.FixedSizeSampler(100, 10)
  assert fixed.dp_event(1.3, 12) == dp_accounting.SelfComposedDpEvent(
      dp_accounting.SampledWithoutReplacementDpEvent(100, 10, gauss), 12)
  assert fixed.neighboring_relation == dp_accounting.NeighboringRelation.REPLACE_ONE
  cyclic = sampling.CyclicSampler(100, 10)  # 10 rounds per epoch.
  tree = lambda steps: dp_accounting.SingleEpochTreeAggregationDpEvent(1.3, steps)
  assert cyclic.dp_event(1.3, 23) == dp_accounting.ComposedDpEvent(
      [dp_accounting.SelfComposedDpEvent(tree(10), 2), tree(3)])
  assert cyclic.dp_event(1.3, 4) == dp_accounting.ComposedDpEvent([tree(4)])
  assert cyclic.neighboring_relation == dp_accounting.NeighboringRelation.REPLACE_SPECIAL
  assert poisson.expected_clients_per_round == 10.0 == fixed.expected_clients_per_round


@pytest.mark.parametrize('build, match', [
    (lambda: sampling.PoissonSampler(10, 0.0), 'rate'),
    (lambda: sampling.PoissonSampler(10, 1.5), 'rate'),
    (lambda: sampling.FixedSizeSampler(10, 11), 'clients_per_round'),
    (lambda: sampling.CyclicSampler(10, 0), 'clients_per_round'),
    (lambda: sampling.FixedSizeSampler(0, 1), 'num_clients'),
    (lambda: sampling.FixedSizeSampler(10, 2).sample(0, IDS), 'client_ids must list all 10'),
    (lambda: sampling.FixedSizeSampler(10, 2).sample(-1, IDS[:10]), 'round_num'),
    (lambda: sampling.CyclicSampler(10, 2).round_event(dp_accounting.GaussianDpEvent(1.0)), 'per epoch'),
])
def test_bad_arguments(build, match):
  with pytest.raises(ValueError, match=match):
    build()
