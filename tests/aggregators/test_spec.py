"""The --aggregator spec parser: every documented spelling, its equivalence to Python composition, errors."""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_fl import aggregators as agg

VALUE_TYPE = tff.to_type(collections.OrderedDict(a=tff.TensorType(np.float32, [6])))
WEIGHT_TYPE = tff.TensorType(np.float32)

SPELLINGS = {
    'mean': lambda: tff.aggregators.MeanFactory(),
    'uniform_mean': agg.uniform_mean,
    'median': agg.median,
    'trimmed_mean(0.1)': lambda: agg.trimmed_mean(0.1),
    'krum(2)': lambda: agg.krum(2),
    'multi_krum(2,5)': lambda: agg.multi_krum(2, 5),
    'clip(1.0)>trimmed_mean(0.1)': lambda: agg.clip(norm=1.0, inner=agg.trimmed_mean(beta=0.1)),
    'quantize(8)>mean': lambda: agg.quantize(8, inner=agg.mean()),
    'topk(0.01)>mean': lambda: agg.topk(0.01, inner=agg.mean()),
    'secure(16)>mean': lambda: agg.secure_mean(16),
    'secure(8, 0.5)>mean': lambda: agg.secure_mean(8, 0.5),
    'adaptive_clip(0.5)>mean': lambda: agg.adaptive_clip(0.5, inner=agg.mean()),
    ' zeroing(5) > adaptive_zeroing(0.9) > quantize(4) > median ': lambda: agg.zeroing(
        5.0, inner=agg.adaptive_zeroing(0.9, inner=agg.quantize(4, inner=agg.median()))),
}


@pytest.mark.parametrize('spec', list(SPELLINGS))
def test_spelling_builds_the_python_composition(spec):
  factory = agg.build_aggregator(spec)
  assert isinstance(factory, tff.aggregators.WeightedAggregationFactory)
  built = factory.create(VALUE_TYPE, WEIGHT_TYPE)
  reference = SPELLINGS[spec]().create(VALUE_TYPE, WEIGHT_TYPE)
  assert built.next.type_signature == reference.next.type_signature
  assert built.initialize.type_signature == reference.initialize.type_signature


def test_chain_computes_clip_then_trimmed_mean():
  rows = np.random.default_rng(0).normal(scale=3.0, size=(10, 6)).astype(np.float32)
  process = agg.build_aggregator('clip(1.0)>trimmed_mean(0.1)', cohort_size=10).create(VALUE_TYPE, WEIGHT_TYPE)
  out = process.next(process.initialize(), [collections.OrderedDict(a=r) for r in rows], [1.0] * 10)
  clipped = rows / np.maximum(1.0, np.linalg.norm(rows, axis=1, keepdims=True))
  kept = np.sort(clipped, axis=0)[1:-1]
  np.testing.assert_allclose(out.result['a'], kept.mean(0), atol=1e-6)


@pytest.mark.parametrize('spec,problem', [
    ('foo', "unknown stage 'foo'"),
    ('mean>', "unknown stage ''"),
    ('krum(2.5)', 'krum parameter f must be an int'),
    ('trimmed_mean(abc)', 'trimmed_mean parameter beta must be a number'),
    ('trimmed_mean', 'trimmed_mean takes trimmed_mean(beta)'),
    ('median(3)', 'median takes median'),
    ('trimmed_mean(0.7)', 'beta must be a float in [0, 0.5)'),
    ('quantize(40)>mean', 'quantize bits must be an int in [1, 16]'),
    ('clip(1.0)', 'clip must be followed by another stage'),
    ('median>clip(1.0)', 'median must be the last stage'),
    ('secure(16)>median', 'secure must be directly followed by mean, not median'),
    ('', 'empty spec'),
])
def test_errors_are_one_line_naming_the_argument_and_the_allowed_stages(spec, problem):
  with pytest.raises(ValueError) as error:
    agg.build_aggregator(spec)
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith('aggregator=')
  assert problem in message
  for spelling in agg.allowed_spellings():
    assert spelling in message


def test_cohort_size_is_checked_for_robust_stages():
  with pytest.raises(ValueError, match=r"aggregator='krum\(2\)'.*n > 2f\+2 = 6.*got cohort_size=6"):
    agg.build_aggregator('krum(2)', cohort_size=6)
  agg.build_aggregator('krum(2)', cohort_size=7)
  agg.build_aggregator('mean', cohort_size=1)


def test_describe_lists_every_spelling():
  text = agg.describe()
  assert all(spelling in text for spelling in agg.allowed_spellings())
  assert set(agg.allowed_spellings()) >= {'mean', 'median', 'trimmed_mean(beta)', 'krum(f)', 'multi_krum(f,m)',
                                        'clip(norm)', 'quantize(bits)', 'topk(fraction)', 'secure(bits[,range])',
                                        'adaptive_clip(quantile)'}


def test_secagg_spellings_build_the_python_factories():
  built = agg.build_aggregator('secagg(16,0.6)>mean', cohort_size=10, seed=3)
  assert (built.bits, built.threshold, built.k, built.max_clients, built.clip_range, built.seed) == (
      16, 0.6, None, 10, 1.0, 3)
  plus = agg.build_aggregator('secagg_plus(24,0.5,4,0.25)>mean', cohort_size=10)
  assert (plus.bits, plus.threshold, plus.k, plus.clip_range) == (24, 0.5, 4, 0.25)
  clipped = agg.build_aggregator('clip(1.0)>secagg(16,0.6)>mean', cohort_size=10)
  assert isinstance(clipped, tff.aggregators.WeightedAggregationFactory)


@pytest.mark.parametrize('spec,cohort,problem', [
    ('secagg(16,0)>mean', 10, 'secagg threshold must be a fraction in (0, 1]; got 0.0'),
    ('secagg(16,1.5)>mean', 10, 'secagg threshold must be a fraction in (0, 1]'),
    ('secagg(16,0.5)>median', 10, 'secagg must be directly followed by mean, not median'),
    ('secagg_plus(16,0.5)>mean', 10, 'secagg_plus takes secagg_plus(bits,threshold,k[,range])'),
    ('secagg_plus(16,0.5,0)>mean', 10, 'k (neighbours) must be an int >= 1'),
    ('secagg(40,0.5)>mean', 10, 'secagg bits must be an int in [1, 32]'),
    ('secagg(3,0.5)>mean', 10, 'need 2^bits - 1 >= clients'),
    ('secagg(16,0.5)>mean', None, 'secagg needs cohort_size (the most clients a round samples)'),
    ('secagg_plus(16,0.5,2)>mean', None, 'secagg_plus needs cohort_size'),
])
def test_secagg_errors_are_one_line_naming_the_argument(spec, cohort, problem):
  with pytest.raises(ValueError) as error:
    agg.build_aggregator(spec, cohort_size=cohort)
  message = str(error.value)
  assert '\n' not in message and message.startswith(f'aggregator={spec!r}') and problem in message
