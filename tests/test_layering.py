"""Layering: importing tff_fl has no side effect on TFF's execution context and fills every library registry by
itself; package imports point downward (data -> models -> aggregators/privacy -> algorithms -> engine/simulation)."""

import ast
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
# Lower number = lower layer; a module-level import may only reach its own layer or lower, and packages of the
# same layer may not import each other both ways.
LAYERS = {'registry': 0, 'data': 0, 'models': 1, 'tasks': 2, 'tasks_real': 2, 'tasks_regional': 2, 'tasks_population': 2,
          'aggregators': 3, 'privacy': 3, 'algorithms': 4, 'engine': 5, 'simulation': 6}

_CHILD = '''
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
before = context_stack_impl.context_stack.current
import tff_fl.aggregators
assert context_stack_impl.context_stack.current is before, 'import tff_fl changed the execution context'
import sys
from tff_fl import tasks
from tff_fl.aggregators import spec
from tff_fl.algorithms import builders
from tff_fl.models import keras_models
assert not [m for m in sys.modules if m.startswith('experiments')]
print(','.join(tasks.TASKS.names()))
print(','.join(builders.ALGORITHMS.names()))
print(','.join(keras_models.MODELS.names()))
print(','.join(spec.STAGES.names()))
'''


def test_import_installs_no_context_and_fills_the_registries():
  proc = subprocess.run([sys.executable, '-c', _CHILD], cwd=REPO, capture_output=True, text=True, timeout=300,
                        stdin=subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert proc.returncode == 0, proc.stderr[-2000:]
  task_names, algorithms, models, stages = [line.split(',') for line in proc.stdout.split()]
  assert {'shakespeare', 'emnist', 'mnist', 'regional_digits', 'mnist_population'} <= set(task_names)
  assert {'scaffold', 'feddyn', 'fedper', 'ditto', 'fedsgd', 'fednova'} <= set(algorithms)
  assert {'char_lstm', 'simple_cnn'} <= set(models) and {'secure', 'krum', 'clip', 'secagg', 'secagg_plus'} <= set(stages)


def _package_imports():
  """(importing layer, imported layer, module, import) for every module-level `tff_fl` import between packages."""
  found = []
  for path in (REPO / 'tff_fl').rglob('*.py'):
    parts = path.relative_to(REPO).with_suffix('').parts
    if len(parts) < 2 or parts[1] == '__init__':
      continue
    source = parts[1]
    for node in ast.parse(path.read_text()).body:
      if isinstance(node, ast.ImportFrom) and node.module == 'tff_fl':
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('tff_fl.'):
        targets = [node.module.split('.')[1]]
      elif isinstance(node, ast.Import):
        targets = [a.name.split('.')[1] for a in node.names if a.name.startswith('tff_fl.')]
      else:
        continue
      found += [(source, t, '/'.join(parts), ast.unparse(node)) for t in targets if t != source]
  return found


def test_package_imports_point_downward_without_cycles():
  imports = _package_imports()
  assert imports, 'the import scan found nothing'
  upward = [f'{m}: {i}' for s, t, m, i in imports if LAYERS[t] > LAYERS[s]]
  assert not upward
  pairs = {(s, t) for s, t, _, _ in imports}
  assert not [p for p in pairs if p[::-1] in pairs]
