"""The README's library example runs as written."""

import os
import re

import numpy as np

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'README.md')


def test_library_example_runs():
  text = open(README).read()
  section = text[text.index('## The library in a few lines'):]
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  namespace = {}
  exec(compile(code, 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  state, process, task = namespace['state'], namespace['process'], namespace['task']
  moved = [np.abs(a - b).max() for a, b in zip(process.get_model_weights(state).trainable,
                                                task.initial_weights(seed=0).trainable)]
  assert max(moved) > 0  # One FedProx/FedYogi round changed the model.


def test_plugin_example_is_the_tested_plugin():
  """The README's plugin module is, line for line, part of tests/experiments/plugin_example.py (run by the binary
  in tests/experiments/test_plugins.py)."""
  text = open(README).read()
  section = text[text.index('## Plugins: an aggregator stage and an algorithm'):]
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  plugin = open(os.path.join(os.path.dirname(README), 'tests', 'experiments', 'plugin_example.py')).read()
  lines = [line for line in code.splitlines() if line.strip()]
  assert len(lines) > 5 and [line for line in lines if line not in plugin.splitlines()] == []
