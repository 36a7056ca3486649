"""`--plugin=module` (repeatable): user modules imported before the binary defines and validates its flags.

A plugin registers into the library's registries (`tff_fl.tasks.TASKS`, `tff_fl.models.keras_models.MODELS`,
`tff_fl.algorithms.builders.ALGORITHMS`, `tff_fl.aggregators.spec.STAGES`) or the binary's components
(`experiments.components.COMPONENTS`, whose `define_flags()` then adds its flags). Because flag help texts and
allowed-value lists are built when the flags are defined, plugins are imported from the command line itself,
before absl parses it: `--plugin` must be given on the command line (not in a --flagfile).
"""

import importlib
import sys
from typing import Sequence

FLAG = 'plugin'


def from_argv(argv: Sequence[str]) -> list[str]:
  """Module names of every `--plugin=m` / `--plugin m` in `argv` (up to a bare `--`), in order."""
  names, args = [], list(argv[1:])
  for i, arg in enumerate(args):
    if arg == '--':
      break
    if arg.startswith(f'--{FLAG}='):
      names.append(arg.split('=', 1)[1])
    elif arg == f'--{FLAG}' and i + 1 < len(args):
      names.append(args[i + 1])
  return names


def load(names: Sequence[str]) -> list:
  """Imports each module (once; the working directory is on the path); a failure is a one-line ValueError."""
  if '' not in sys.path:
    sys.path.insert(0, '')
  modules = []
  for name in names:
    try:
      modules.append(importlib.import_module(name))
    except Exception as e:  # pylint: disable=broad-except  (any failure of a user module is reported in one line)
      first_line = str(e).splitlines()[0] if str(e) else ''
      raise ValueError(f'--{FLAG}={name}: cannot import it: {type(e).__name__}: {first_line}') from None
  return modules
