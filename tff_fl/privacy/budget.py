"""Privacy budget: may round t+1 run without exceeding `target_epsilon` at `target_delta`?

Epsilon is non-decreasing in the number of rounds, so the rounds affordable under a budget are a prefix
1..T; `max_rounds_within` finds T by doubling then bisection (O(log T) accountant calls). A training loop asks
`PrivacyBudget.can_run_next_round(rounds_completed)` *before* each round, so no model past the budget is ever
computed, let alone released.
"""

from collections.abc import Callable
import math
from typing import Optional, Protocol


class EpsilonSource(Protocol):

  def epsilon(self, rounds: int, target_delta: float) -> float:
    ...


def max_rounds_within(epsilon_fn: Callable[[int], float], target_epsilon: float, max_rounds: int) -> int:
  """Largest T in [0, max_rounds] with epsilon_fn(T) <= target_epsilon; epsilon_fn must be non-decreasing."""
  if not target_epsilon > 0:
    raise ValueError(f'target_epsilon must be positive, got {target_epsilon!r}.')
  if max_rounds < 0:
    raise ValueError(f'max_rounds must be >= 0, got {max_rounds!r}.')
  fits = lambda t: epsilon_fn(t) <= target_epsilon
  if max_rounds == 0 or not fits(1):
    return 0
  lo, hi = 1, 2  # Invariant: fits(lo); hi unknown or not fitting.
  while hi <= max_rounds and fits(hi):
    lo, hi = hi, 2 * hi
  if hi > max_rounds:
    if fits(max_rounds):
      return max_rounds
    hi = max_rounds
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  return lo


class PrivacyBudget:
  """Tracks epsilon at `target_delta`; with `target_epsilon`, says whether another round is affordable."""

  def __init__(self, accountant: EpsilonSource, target_delta: float, target_epsilon: Optional[float] = None):
    if not 0.0 < target_delta < 1.0:
      raise ValueError(f'target_delta must be in (0, 1), got {target_delta!r}.')
    if target_epsilon is not None and not target_epsilon > 0:
      raise ValueError(f'target_epsilon must be positive (or None for no budget), got {target_epsilon!r}.')
    self._accountant = accountant
    self.target_delta = float(target_delta)
    self.target_epsilon = None if target_epsilon is None else float(target_epsilon)

  def epsilon(self, rounds_completed: int) -> float:
    """Epsilon spent after `rounds_completed` rounds (what metrics.csv reports for that round)."""
    return self._accountant.epsilon(rounds_completed, self.target_delta)

  def can_run_next_round(self, rounds_completed: int) -> bool:
    """True iff running round `rounds_completed + 1` keeps epsilon <= target_epsilon (always True without one)."""
    if self.target_epsilon is None:
      return True
    return self.epsilon(rounds_completed + 1) <= self.target_epsilon

  def rounds_within_budget(self, max_rounds: int = 10**6) -> Optional[int]:
    """How many rounds the budget allows (None without a target_epsilon)."""
    if self.target_epsilon is None:
      return None
    return max_rounds_within(self.epsilon, self.target_epsilon, max_rounds)

  def stop_message(self, rounds_completed: int) -> str:
    """One-line log/summary text for a run stopped by the budget."""
    nxt = self.epsilon(rounds_completed + 1)
    return (f'privacy budget reached: stopping after {rounds_completed} rounds (epsilon='
            f'{self.epsilon(rounds_completed):.4f}); round {rounds_completed + 1} would give epsilon='
            f'{nxt if math.isfinite(nxt) else "inf"} > target_epsilon={self.target_epsilon} '
            f'at delta={self.target_delta:g}.')
