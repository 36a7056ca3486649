"""Checkpoints of the full simulation state, written atomically.

A checkpoint is `ckpt_<round>.npz`: the flattened leaves of the learning process state (`tf.nest.flatten`, restored
with `tf.nest.pack_sequence_as` onto a freshly initialized state) plus named extra arrays from other components
(e.g. a client state store). `config.json` next to them holds the configuration fingerprint: resuming with a
different configuration is refused, naming the flags that differ. A setting the saved fingerprint lacks (a flag
added by a newer version of the code) matches if it is at its default, so upgrading the code keeps runs resumable. A crash loses at most the rounds since the last
checkpoint; a partially written file is never visible (write to a temporary name, fsync, rename).
"""

import glob
import json
import os
import re
from typing import Any, Optional

import numpy as np
import tensorflow as tf

_PATTERN = re.compile(r'ckpt_(\d+)\.npz$')
_STATE_PREFIX = 'state/'
_EXTRA_PREFIX = 'extra/'


class CheckpointManager:
  """Saves and restores (round, process state, extras) under `directory`, keeping the newest `keep`."""

  def __init__(self, directory: str, fingerprint: dict[str, Any], keep: int = 2,
               defaults: Optional[dict[str, Any]] = None):
    self.directory = directory
    self.fingerprint = fingerprint
    self.keep = keep
    self.defaults = defaults or {}  # Setting -> default value, for settings an older fingerprint lacks.

  def check_config(self) -> None:
    """Raises ValueError if the directory holds checkpoints of a different configuration; else records ours."""
    path = os.path.join(self.directory, 'config.json')
    if os.path.exists(path):
      with open(path) as f:
        saved = json.load(f)
      diff = sorted(k for k in set(saved) | set(self.fingerprint) if saved.get(k) != self.fingerprint.get(k)
                    and not (k not in saved and k in self.defaults and self.fingerprint.get(k) == self.defaults[k]))
      if diff and self.latest_round() is not None:
        shown = ', '.join(f'--{k} ({saved.get(k)!r} vs {self.fingerprint.get(k)!r})' for k in diff[:4])
        raise ValueError(f'{self.directory} holds checkpoints of a different configuration ({shown}); use a new '
                         '--experiment_name or --root_output_dir, or delete that directory to start over.')
    os.makedirs(self.directory, exist_ok=True)
    _atomic_write_bytes(path, json.dumps(self.fingerprint, indent=1, sort_keys=True).encode())

  def rounds(self) -> list[int]:
    found = (_PATTERN.search(p) for p in glob.glob(os.path.join(self.directory, 'ckpt_*.npz')))
    return sorted(int(m.group(1)) for m in found if m)

  def latest_round(self) -> Optional[int]:
    rounds = self.rounds()
    return rounds[-1] if rounds else None

  def save(self, round_num: int, state, extras: Optional[dict[str, np.ndarray]] = None) -> str:
    arrays = {f'{_STATE_PREFIX}{i:05d}': np.asarray(leaf) for i, leaf in enumerate(tf.nest.flatten(state))}
    arrays.update({f'{_EXTRA_PREFIX}{k}': np.asarray(v) for k, v in (extras or {}).items()})
    path = os.path.join(self.directory, f'ckpt_{round_num:06d}.npz')
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in self.rounds()[:-self.keep]:
      os.remove(os.path.join(self.directory, f'ckpt_{old:06d}.npz'))
    return path

  def restore(self, template_state, round_num: Optional[int] = None):
    """Returns (round, state, extras) of the newest (or given) checkpoint, state shaped like `template_state`."""
    round_num = self.latest_round() if round_num is None else round_num
    path = os.path.join(self.directory, f'ckpt_{round_num:06d}.npz')
    with np.load(path, allow_pickle=False) as z:
      leaves = [z[k] for k in sorted(k for k in z.files if k.startswith(_STATE_PREFIX))]
      extras = {k[len(_EXTRA_PREFIX):]: z[k] for k in z.files if k.startswith(_EXTRA_PREFIX)}
    template_leaves = tf.nest.flatten(template_state)
    if len(leaves) != len(template_leaves):
      raise ValueError(f'{path} does not match this configuration ({len(leaves)} state tensors, expected '
                       f'{len(template_leaves)}); use a new --experiment_name.')
    leaves = [np.asarray(l, dtype=np.asarray(t).dtype).reshape(np.shape(t)) for l, t in zip(leaves, template_leaves)]
    return round_num, tf.nest.pack_sequence_as(template_state, leaves), extras


def _atomic_write_bytes(path: str, data: bytes) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
