"""`ClientAxisAggregation`'s fold of a slot's clients (`fold_start` / `fold_add` / `fold_end`) against the aggregator's
client part run as TFF's MapReduceForm defines it (`accumulate` folded from `zero` in client order), against numpy
for a weighted sum, and against stock TFF's round for a robust aggregator."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.aggregators import spec
from tff_fl.engine import aggregation
from tff_fl.engine import graph_calls

VALUE = tff.to_type(collections.OrderedDict(a=tff.TensorType(np.float32, [3, 4]), b=tff.TensorType(np.float32, [4])))

# spec -> the accumulator gains a row per client (merge concatenates)
CASES = collections.OrderedDict([('mean', False), ('clip(0.5)>mean', False), ('median', True),
                                 ('clip(1.0)>trimmed_mean(0.2)', True), ('krum(1)', True)])


def _clients(num, seed=0):
  rng = np.random.default_rng(seed)
  values = collections.OrderedDict(a=rng.normal(size=[num, 3, 4]).astype(np.float32),
                                   b=rng.normal(size=[num, 4]).astype(np.float32))
  return values, rng.uniform(1, 10, size=[num]).astype(np.float32)


def _aggregation(name):
  factory = spec.build_aggregator(name, cohort_size=10)
  return aggregation.ClientAxisAggregation(factory.create(VALUE, tff.TensorType(np.float32))), factory


def _fold(agg, values, weights, num, use_carry):
  """The slot's accumulator from the aggregator's initial state: `start`/`add`/`finish` in a tf.while_loop, or
  MapReduceForm's `accumulate` folded from `zero` (unrolled)."""
  state = agg.initialize()

  @tf.function(autograph=False)
  def run():
    client_input = graph_calls.call_as_function(agg.form.prepare, state)
    pick = lambda c: tf.nest.map_structure(lambda t: tf.convert_to_tensor(t)[c], (values, weights))
    if not use_carry:
      acc = agg.zero()
      for c in range(num):
        acc = agg.accumulate_client(acc, *pick(c), client_input)
      return acc
    carry = agg.fold_start(tf.constant(num))
    body = lambda c, carry: (c + 1, agg.fold_add(carry, c, *pick(c), client_input))
    _, carry = tf.while_loop(lambda c, _: c < num, body, (tf.constant(0), carry),
                             shape_invariants=(tf.TensorShape([]), agg.fold_invariants(carry)))
    return agg.fold_end(carry)

  return run()


@pytest.mark.parametrize('name', list(CASES))
def test_carry_accumulates_as_the_map_reduce_form(name):
  agg, _ = _aggregation(name)
  assert agg.concatenates == CASES[name]
  values, weights = _clients(7)
  for num in (7, 0):
    carried, folded = _fold(agg, values, weights, num, True), _fold(agg, values, weights, num, False)
    for a, b in zip(tf.nest.flatten(folded), tf.nest.flatten(carried)):
      assert a.shape == b.shape
      np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-7)


def test_weighted_sum_equals_numpy():
  agg = aggregation.ClientAxisAggregation(tff.aggregators.MeanFactory().create(VALUE, tff.TensorType(np.float32)))
  values, weights = _clients(5, seed=1)
  flat = tf.nest.flatten(_fold(agg, values, weights, 5, True))
  np.testing.assert_allclose(flat[0].numpy(), np.einsum('c,cij->ij', weights, values['a']), rtol=1e-5)
  np.testing.assert_allclose(flat[1].numpy(), np.einsum('c,ci->i', weights, values['b']), rtol=1e-5)
  np.testing.assert_allclose(flat[2].numpy(), weights.sum(), rtol=1e-6)


def test_a_robust_accumulator_reports_what_stock_tff_does():
  """The concatenated rows go through `report`: the trimmed mean equals the factory run by TFF's own runtime."""
  agg, factory = _aggregation('trimmed_mean(0.2)')
  values, weights = _clients(10, seed=2)
  acc = _fold(agg, values, weights, 10, True)
  report = graph_calls.call_as_function(agg.form.report, agg.form.merge(agg.form.zero(), acc))
  process = factory.create(VALUE, tff.TensorType(np.float32))
  clients = [collections.OrderedDict((k, v[c]) for k, v in values.items()) for c in range(10)]
  stock = process.next(process.initialize(), clients, list(weights)).result
  _, out = agg.form.update(agg.initialize(), (report, (), (), ()))
  for k in ('a', 'b'):
    np.testing.assert_allclose(np.asarray(out['result'][k]), np.asarray(stock[k]), rtol=1e-5, atol=1e-6)
