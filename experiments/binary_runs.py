"""Runs the training binary as a subprocess for the report scripts: one place for the command, env and outputs."""

import csv
import json
import os
import subprocess
import sys
import time
from typing import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_binary(out_dir: str, name: str, flags: Sequence[str]) -> dict:
  """`python -m experiments.train *flags` into <out_dir>/<name>; returns summary.json plus `rows` (metrics.csv),
  `wall_seconds` and `stdout`. Raises RuntimeError with the end of stderr if the run fails."""
  cmd = [sys.executable, '-m', 'experiments.train', *flags, f'--root_output_dir={out_dir}',
         f'--experiment_name={name}']
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  if proc.returncode != 0:
    raise RuntimeError(f'run {name} failed:\n{proc.stderr[-3000:]}')
  with open(os.path.join(out_dir, name, 'summary.json')) as f:
    summary = json.load(f)
  with open(os.path.join(out_dir, name, 'metrics.csv')) as f:
    summary['rows'] = list(csv.DictReader(f))
  summary['wall_seconds'] = time.time() - t0
  summary['stdout'] = proc.stdout
  return summary


def write_report(path: str, lines: Sequence[str]) -> None:
  """Writes a markdown report (creating its directory) and echoes it."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))
