"""Experiment outputs under `<root_output_dir>/<experiment_name>/`: hparams.json, metrics.csv (one row per round,
columns the union of all rounds' keys), TensorBoard events (tb/), summary.json, and the checkpoints/ directory.
Every file is replaced atomically, so a kill never leaves a torn file; on resume the rows after the restored round
are dropped, so metrics.csv always describes exactly the rounds the model has seen.
"""

import collections
import csv
import fnmatch
import io
import json
import math
import os
import shutil
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf

from tff_fl.simulation import checkpoint


def prepare_output_dir(root_output_dir: str, experiment_name: str) -> str:
  """Returns the experiment directory, created if needed; a path that is a file gives a one-line error."""
  if not experiment_name or os.sep in experiment_name:
    raise ValueError(f"experiment_name must be a non-empty name without '{os.sep}'; got '{experiment_name}'.")
  for path, arg in ((root_output_dir, 'root_output_dir'), (os.path.join(root_output_dir, experiment_name),
                                                             'experiment_name')):
    if os.path.exists(path) and not os.path.isdir(path):
      raise ValueError(f'{arg}: {path} exists and is not a directory; choose another path.')
  exp_dir = os.path.join(root_output_dir, experiment_name)
  try:
    os.makedirs(exp_dir, exist_ok=True)
  except OSError as e:
    raise ValueError(f'root_output_dir: cannot create {exp_dir}: {e.strerror}.') from e
  return exp_dir


def to_scalar(value) -> Any:
  """Python scalar for CSV/JSON, or None for non-scalars."""
  arr = np.asarray(value)
  if arr.ndim != 0 or arr.dtype.kind not in 'biuf':
    return None
  return arr.item()


_MAX_VECTOR_COLUMNS = 32


def flatten_metrics(metrics, prefix: str = '') -> dict[str, Any]:
  """Nested OrderedDicts of measurements -> {'a/b/c': scalar}; vectors of <= 32 numbers -> 'a/b/0', 'a/b/1', ...;
  larger tensors are skipped."""
  flat = {}
  items = metrics.items() if hasattr(metrics, 'items') else (
      enumerate(metrics) if isinstance(metrics, (list, tuple)) else None)
  if items is None:
    arr = np.asarray(metrics)
    if arr.ndim == 1 and 0 < arr.size <= _MAX_VECTOR_COLUMNS and arr.dtype.kind in 'biuf':
      items = enumerate(arr.tolist())  # Small vectors (e.g. Krum's selected indices) become one column each.
    else:
      scalar = to_scalar(metrics)
      if scalar is not None:
        flat[prefix.rstrip('/')] = scalar
      return flat
  for key, value in items:
    flat.update(flatten_metrics(value, f'{prefix}{key}/'))
  return flat


RELEASED_STATUSES = ('accounted', 'public', 'evaluation')


class ReleasePolicy:
  """What leaves a run that makes a privacy claim: metrics.csv columns (and so TensorBoard), summary.json keys and
  whole files (e.g. 'clients.csv') are matched against `rules`, `(fnmatch pattern, status, reason)` in order, first
  match wins. A status in `RELEASED_STATUSES` is written; any other status, and a name no rule matches, is not
  written (default deny: a new metric stays unreleased until a rule says what covers it). `released()` /
  `suppressed()` are what the run actually met; `report(policy)`, if given, turns them into the summary's
  privacy.released section."""

  def __init__(self, rules, report: Optional[Callable[['ReleasePolicy'], Any]] = None):
    self.rules = [tuple(r) for r in rules]
    self.report = report
    self._released: dict[str, str] = collections.OrderedDict()
    self._suppressed: dict[str, str] = collections.OrderedDict()

  def rule(self, name: str):
    """(status, reason) of the first rule matching `name`; ('suppressed', 'no release rule') if none does."""
    for pattern, status, reason in self.rules:
      if fnmatch.fnmatchcase(name, pattern):
        return status, reason
    return 'suppressed', 'no release rule covers it (default deny)'

  def allows(self, name: str) -> bool:
    status, reason = self.rule(name)
    if status in RELEASED_STATUSES:
      self._released.setdefault(name, status)
      return True
    self._suppressed.setdefault(name, f'{status}: {reason}')
    return False

  def filter(self, values: dict) -> 'collections.OrderedDict':
    """The entries of `values` (metrics row or summary) that may be written, in order."""
    return collections.OrderedDict((k, v) for k, v in values.items() if self.allows(k))

  def released(self) -> dict[str, str]:
    return dict(self._released)

  def suppressed(self) -> dict[str, str]:
    return dict(self._suppressed)


class ExperimentOutputs:
  """Writes the experiment's files. `rows` is the in-memory metrics table (list of dicts, one per round). With a
  `release` policy, rows and the summary are filtered by it before anything is written."""

  def __init__(self, exp_dir: str, release: Optional[ReleasePolicy] = None):
    self.exp_dir = exp_dir
    self.metrics_path = os.path.join(exp_dir, 'metrics.csv')
    self.rows: list[dict[str, Any]] = []
    self.release = release
    self._tb = None

  def write_json(self, name: str, obj) -> None:
    data = json.dumps(obj, indent=1, sort_keys=False, default=_json_default).encode()
    checkpoint._atomic_write_bytes(os.path.join(self.exp_dir, name), data)  # pylint: disable=protected-access

  def load_rows(self, upto_round: Optional[int]) -> None:
    """Keeps the rows of rounds <= `upto_round` from an earlier run (none if `upto_round` is None)."""
    self.rows = []
    if upto_round is None or not os.path.exists(self.metrics_path):
      return
    with open(self.metrics_path, newline='') as f:
      for row in csv.DictReader(f):
        if int(row['round']) <= upto_round:
          kept = {k: _parse(v) for k, v in row.items() if v != ''}
          # A run written before its release policy existed keeps only what the policy allows.
          self.rows.append(self.release.filter(kept) if self.release is not None else kept)

  def rewrite_tensorboard(self) -> None:
    """Replaces tb/ with the events of `rows` only. Called on resume: events an interrupted run wrote after its
    last checkpoint would otherwise show next to the re-run rounds (metrics.csv is the source of truth)."""
    self.close()
    shutil.rmtree(os.path.join(self.exp_dir, 'tb'), ignore_errors=True)
    for row in self.rows:
      self._write_tensorboard(row)

  def add_row(self, row: dict[str, Any]) -> dict[str, Any]:
    """Appends `row` (filtered by the release policy, if any) and rewrites metrics.csv; returns what was written."""
    if self.release is not None:
      row = self.release.filter(row)
    self.rows.append(row)
    columns = []
    for r in self.rows:
      columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval='', lineterminator='\n')
    writer.writeheader()
    writer.writerows(self.rows)
    checkpoint._atomic_write_bytes(self.metrics_path, buf.getvalue().encode())  # pylint: disable=protected-access
    self._write_tensorboard(row)
    return row

  def write_summary(self, summary: dict[str, Any]) -> dict[str, Any]:
    """summary.json, filtered by the release policy (whose report, if any, becomes summary['privacy']['released']);
    returns what was written."""
    if self.release is not None:
      summary = self.release.filter(summary)
      if self.release.report is not None:
        summary['privacy'] = collections.OrderedDict(summary.get('privacy') or {},
                                                     released=self.release.report(self.release))
    self.write_json('summary.json', summary)
    return summary

  def _write_tensorboard(self, row: dict[str, Any]) -> None:
    if self._tb is None:
      self._tb = tf.summary.create_file_writer(os.path.join(self.exp_dir, 'tb'))
    with self._tb.as_default():
      for key, value in row.items():
        if key != 'round' and isinstance(value, (int, float)) and math.isfinite(value):
          tf.summary.scalar(key, value, step=int(row['round']))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _parse(text: str):
  try:
    return int(text)
  except ValueError:
    try:
      return float(text)
    except ValueError:
      return text


def _json_default(obj):
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  return str(obj)
