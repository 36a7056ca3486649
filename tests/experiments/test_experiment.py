"""Experiment: one process builder (a second replacement is refused), then the process wrappers in order."""

import types

import pytest

from experiments import experiment


def _exp():
  return experiment.Experiment(task=None, task_cfg=None, algo_cfg=types.SimpleNamespace(algorithm='fedfoo'),
                               loop_cfg=None, client_optimizer=None, server_optimizer=None, exp_dir='')


def test_builder_then_wrappers_in_order():
  exp = _exp()
  exp.replace_process_builder(lambda e: ['built for ' + e.algo_cfg.algorithm], '--pruning_schedule=constant')
  exp.process_wrappers += [lambda p: p + ['drift'], lambda p: p + ['preprocessing']]
  assert exp.build_process() == ['built for fedfoo', 'drift', 'preprocessing'] and exp.process[-1] == 'preprocessing'
  with pytest.raises(ValueError, match='^--engine=fast builds its own process and cannot be combined with '
                                       '--pruning_schedule=constant.$'):
    exp.replace_process_builder(lambda e: None, '--engine=fast')


def test_learning_process_wrapper_names_the_flag():
  exp = _exp()
  exp.replace_process_builder(lambda e: object(), '--x')
  exp.wrap_learning_process(lambda p: p, '--drift_metrics')
  with pytest.raises(ValueError, match='^--drift_metrics needs an algorithm built as a tff.learning LearningProcess; '
                                       '--algorithm=fedfoo builds a object.$'):
    exp.build_process()
