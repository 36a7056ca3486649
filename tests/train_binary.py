"""Runs the training binary (`python -m experiments.train`) for tests.

`run(*flags)` runs it in this pytest process, as the command line would: absl parses `['train', *flags]` into the
binary's flags (unparsed again afterwards, as tests/experiments/conftest.py's `parse`), `experiments.train.main` runs, stdout, stderr and absl's log stream are
captured, and `sys.exit(n)` becomes `returncode` n (a flag parse error is 1, as `absl.app.run` exits). It saves the
~10 s of importing TF and TFF per run. `run(*flags, subprocess=True)` starts the real binary instead: tests of
process-level behaviour (kill -9 and resume, signals, the TFF worker's lifetime, `--plugin`) and one smoke run per
test file keep that path covered. `command(*flags)` is the subprocess command line (e.g. for `subprocess.Popen`).
"""

import contextlib
import io
import os
import subprocess as subprocess_lib
import sys
from typing import NamedTuple

from absl import flags as absl_flags
from absl import logging as absl_logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')


class Result(NamedTuple):
  returncode: int
  stdout: str
  stderr: str


def read_outputs(exp_dir: str) -> tuple[list, dict]:
  """(metrics.csv rows as dicts of strings, summary.json) of a finished run's experiment directory."""
  import csv, json  # pylint: disable=g-import-not-at-top,multiple-imports
  with open(os.path.join(exp_dir, 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  with open(os.path.join(exp_dir, 'summary.json')) as f:
    return rows, json.load(f)


def command(*flags) -> list[str]:
  return [sys.executable, '-m', 'experiments.train', *flags]


@contextlib.contextmanager
def _absl_log_stream(stream):
  handler = absl_logging.get_absl_handler().python_handler
  saved = handler.stream
  handler.stream = stream
  try:
    yield
  finally:
    handler.stream = saved


def run(*flags, subprocess: bool = False, timeout: float = 600) -> Result:
  """The binary with `flags` (module docstring); returns (returncode, stdout, stderr)."""
  flags = [str(f) for f in flags]
  if subprocess:
    proc = subprocess_lib.run(command(*flags), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess_lib.DEVNULL, env=ENV)
    return Result(proc.returncode, proc.stdout, proc.stderr)
  from experiments import train  # pylint: disable=g-import-not-at-top  (defines the binary's flags)
  from tensorflow_federated.python.core.impl.context_stack import context_stack_impl  # pylint: disable=g-import-not-at-top
  context = context_stack_impl.context_stack.current  # --workers installs its own, whose workers main stops.
  out, err = io.StringIO(), io.StringIO()
  code = 0
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
      _absl_log_stream(err):
    absl_flags.FLAGS.unparse_flags()
    try:
      argv = absl_flags.FLAGS(['train', *flags])
      train.main(argv)
    except absl_flags.Error as e:
      err.write(f'FATAL Flags parsing error: {e}\n')
      code = 1
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
      absl_flags.FLAGS.unparse_flags()
      context_stack_impl.context_stack.set_default_context(context)
  return Result(code, out.getvalue(), err.getvalue())
