"""`DriftHook`: the training-loop side of the client-drift diagnostics (`tff_fl.algorithms.drift`).

Adds `drift/loss_change` (train loss minus the previous round's) to each metrics row and logs a warning naming the
likely cause (`drift.likely_cause` of the round's `drift/` figures) when the train loss rises by more than
`warning_threshold`. Lives in the simulation layer: algorithms do not import the training loop.
"""

from typing import Any, Optional

from absl import logging
import numpy as np

from tff_fl.algorithms import drift
from tff_fl.simulation import training_loop


class DriftHook(training_loop.RoundHook):
  """Adds `drift/loss_change`; logs a warning naming the likely cause when the train loss rises by > threshold."""
  name = 'drift'

  def __init__(self, warning_threshold: float):
    if warning_threshold < 0:
      raise ValueError(f'warning_threshold must be >= 0; got {warning_threshold}.')
    self.threshold = warning_threshold
    self.previous_loss: Optional[float] = None
    self.history: list[dict[str, float]] = []
    self.warnings: list[str] = []

  def after_round(self, round_num, output, row) -> None:
    del output
    figures = {k.split('/')[-1]: v for k, v in row.items() if k.startswith('drift/') and isinstance(v, (int, float))}
    loss = row.get('train_loss')
    if self.previous_loss is not None and loss is not None:
      change = loss - self.previous_loss
      row['drift/loss_change'] = change
      if change > self.threshold:
        message = (f'round {round_num}: train loss rose by {change:.4g} (> warning threshold '
                   f'{self.threshold}); likely cause: {drift.likely_cause(figures, self.history)}')
        logging.warning(message)
        self.warnings.append(message)
    self.previous_loss = loss
    self.history.append(figures)

  def checkpoint_arrays(self) -> dict[str, np.ndarray]:
    return {'previous_loss': np.array(np.nan if self.previous_loss is None else self.previous_loss)}

  def restore_arrays(self, arrays) -> None:
    if 'previous_loss' in arrays and np.isfinite(arrays['previous_loss']):
      self.previous_loss = float(arrays['previous_loss'])

  def summary(self) -> dict[str, Any]:
    return {'drift_warnings': len(self.warnings)}
