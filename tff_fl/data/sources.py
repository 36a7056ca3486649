"""Centralized example arrays that the partitioners split into simulated clients.

A source returns an `ArrayData`: features `x` [N, ...] float32, labels `y` [N] int32 in [0, num_classes), and
optionally `groups` [N], a natural client id per example (writer, speaker, device) for the `natural` partition.
"""

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class ArrayData:
  """x: [N, ...] float32 features; y: [N] int32 labels; groups: optional [N] natural group/client id (str or int)."""

  x: np.ndarray
  y: np.ndarray
  groups: Optional[np.ndarray] = None

  def __post_init__(self):
    x = np.asarray(self.x, dtype=np.float32)
    y = np.asarray(self.y)
    if y.ndim != 1 or x.ndim < 1 or x.shape[0] != y.shape[0]:
      raise ValueError(f'ArrayData needs x [N, ...] and y [N] with the same N; got x {x.shape}, y {y.shape}')
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0):
      raise ValueError(f'ArrayData labels y must be non-negative integers; got dtype {y.dtype}, min {y.min()}')
    object.__setattr__(self, 'x', x)
    object.__setattr__(self, 'y', y.astype(np.int32))
    if self.groups is not None:
      groups = np.asarray(self.groups)
      if groups.shape != y.shape:
        raise ValueError(f'ArrayData groups must have shape [N]={y.shape}; got {groups.shape}')
      object.__setattr__(self, 'groups', groups)

  def __len__(self) -> int:
    return int(self.y.shape[0])

  @property
  def num_classes(self) -> int:
    """max label + 1 (labels are 0-based class indices)."""
    return int(self.y.max()) + 1 if self.y.size else 0


def load_digits() -> ArrayData:
  """scikit-learn's bundled digits (no download): x [1797, 8, 8, 1] float32 scaled to [0, 1] (pixel/16), y int32."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top  (heavy; only needed here)

  bunch = datasets.load_digits()
  x = (bunch.images.astype(np.float32) / 16.0)[..., np.newaxis]
  return ArrayData(x=x, y=bunch.target.astype(np.int32))
