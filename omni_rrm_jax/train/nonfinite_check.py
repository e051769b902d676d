"""Stopping a run whose updates keep coming out non-finite, checked every step.

  check = NonfiniteCheck(train_step.max_nonfinite_streak)
  for step in ...:
    state, metrics = train_step(state, batch)   # dispatched, not yet run
    check.push(metrics)                         # raises on the step before's streak
  check.flush()                                 # ... and on the last step's

`train/guarded_update.py` skips an update whose loss or gradient norm is not
finite and counts the skips in a row (`nonfinite_streak`). A skipped update
leaves the parameters as they were, so a run that keeps skipping is going
nowhere; it is stopped once the streak reaches `train.max_nonfinite_streak`.

The streak is a device scalar. Fetching it right after the step that made it
would make the host wait for that step before preparing the next batch, so
`NonfiniteCheck` reads step n's streak once step n+1 is dispatched: the device
always has a step queued. A run whose streak reaches the limit at step n stops
while step n+1 runs, before step n+1's checkpoint; a checkpoint of step n, if one
was due, holds the parameters of the last good step (skips change nothing).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

# What `check_nonfinite` reads: three scalars, not a step's whole metrics.
_KEYS = ("nonfinite_streak", "nonfinite_total", "step")


def check_nonfinite(metrics: Mapping[str, Any], limit: int) -> None:
  """Raises once `limit` consecutive updates were skipped as non-finite.

  Args:
    metrics: a train step's metrics on the host (reads `nonfinite_streak`,
      `nonfinite_total`, `step`).
    limit: the largest tolerated streak; <= 0 disables the check.

  Raises:
    FloatingPointError: naming the streak, the total and the step.
  """
  streak = int(np.asarray(metrics["nonfinite_streak"]))
  if limit > 0 and streak >= limit:
    raise FloatingPointError(
        f"{streak} consecutive train steps had a non-finite loss or gradient norm "
        f"(limit {limit}; {int(np.asarray(metrics['nonfinite_total']))} skipped in total, "
        f"last at step {int(np.asarray(metrics['step']))}); parameters are unchanged since the "
        "last good step. Lower the learning rate or inspect the data around this step.")


class NonfiniteCheck:
  """`check_nonfinite` on every step, one step behind the dispatch.

  Args:
    limit: the largest tolerated streak (`Step.max_nonfinite_streak`).
  """

  def __init__(self, limit: int):
    self.limit = limit
    self._held: dict[str, jax.Array] | None = None

  def push(self, metrics: Mapping[str, Any]) -> None:
    """Holds the just-dispatched step's streak scalars and checks the ones held
    before (that step is done or about to be: only its three scalars are fetched).

    Raises:
      FloatingPointError: the step before reached the limit.
    """
    held, self._held = self._held, {k: metrics[k] for k in _KEYS}
    if held is not None:
      check_nonfinite(jax.device_get(held), self.limit)

  def flush(self) -> None:
    """Checks the last step pushed (call it after the loop, before the final save)."""
    held, self._held = self._held, None
    if held is not None:
      check_nonfinite(jax.device_get(held), self.limit)
