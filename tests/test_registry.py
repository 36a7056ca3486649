"""`tff_fl.registry.Registry` and the five registries built on it: duplicates refused, unknown names listed."""

import pytest

from experiments import components
from tff_fl import registry
from tff_fl import tasks
from tff_fl.aggregators import spec
from tff_fl.algorithms import builders
from tff_fl.models import keras_models


def test_register_get_names_in_order():
  r = registry.Registry('widget')
  assert r.register('b', 2) == 2 and r.register('a', 1) == 1
  assert r.names() == ('b', 'a') and list(r) == ['b', 'a'] and len(r) == 2 and 'a' in r and 'c' not in r
  assert r.get('a') == 1


def test_duplicate_and_unknown_names_are_one_line_errors():
  r = registry.Registry('widget')
  r.register('a', 1)
  with pytest.raises(ValueError, match=r"^widget 'a' is already registered; pick another name\.$"):
    r.register('a', 1)  # Even the same object: a second registration is a mistake, not a no-op.
  assert r.get('a') == 1
  with pytest.raises(ValueError, match=r"^widget must be one of a; got 'z'\.$"):
    r.get('z')
  with pytest.raises(ValueError, match='non-empty strings'):
    r.register('', 3)


@pytest.mark.parametrize('register, name', [
    (lambda name: tasks.register(name, lambda cfg: None), 'digits'),
    (lambda name: keras_models.MODELS.register(name, lambda shape, n: None), 'char_lstm'),
    (lambda name: builders.register(name, lambda exp: None), 'scaffold'),
    (lambda name: spec.register_stage(name, lambda cohort_size: None, terminal=True), 'mean'),
    (lambda name: components.COMPONENTS.register(name, 'experiments.components.drift'), 'privacy'),
])
def test_every_registry_refuses_to_overwrite(register, name):
  with pytest.raises(ValueError, match=f"'{name}' is already registered"):
    register(name)


def test_built_in_contents():
  assert set(tasks.TASKS.names()) >= {'digits', 'synthetic', 'mnist', 'fashion_mnist', 'shakespeare', 'emnist',
                                      'regional_digits'}
  assert builders.ALGORITHMS.names() == ('fedavg', 'fedprox', 'fedsgd', 'fednova', 'scaffold', 'feddyn', 'fedper',
                                         'ditto')
  assert keras_models.MODELS.names() == ('logreg', '2nn', 'cnn', 'simple_cnn', 'char_lstm')
  assert spec.allowed_spellings()[:2] == ('mean', 'uniform_mean')
  assert {'secure(bits[,range])', 'secagg(bits,threshold[,range])',
          'secagg_plus(bits,threshold,k[,range])'} <= set(spec.allowed_spellings())
  assert [n for n, s in spec.STAGES.items() if s.only_before == 'mean'] == ['secure', 'secagg', 'secagg_plus']


def test_task_defaults_resolve_model_and_partition():
  shakespeare = tasks.resolve(tasks.TaskConfig(task='shakespeare'))
  assert (shakespeare.model, shakespeare.partition) == ('char_lstm', 'natural')
  digits = tasks.resolve(tasks.TaskConfig(task='digits'))
  assert (digits.model, digits.partition) == ('logreg', 'dirichlet')
  explicit = tasks.resolve(tasks.TaskConfig(task='emnist', model='cnn', partition='natural'))
  assert (explicit.model, explicit.partition) == ('cnn', 'natural')
  with pytest.raises(ValueError, match="^task must be one of digits, synthetic, .*; got 'nope'"):
    tasks.resolve(tasks.TaskConfig(task='nope'))
