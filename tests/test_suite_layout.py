"""The suite's own layout: test modules are imported by basename (no packages under tests/), so two files with the
same name in different directories make collection fail with 'import file mismatch'."""

import collections
import os

TESTS = os.path.dirname(os.path.abspath(__file__))


def test_test_module_basenames_are_unique():
  by_name = collections.defaultdict(list)
  for root, _, files in os.walk(TESTS):
    for name in files:
      if name.endswith('.py') and name != 'conftest.py':
        by_name[name].append(os.path.relpath(os.path.join(root, name), TESTS))
  assert not {k: v for k, v in by_name.items() if len(v) > 1}
