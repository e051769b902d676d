"""Latency per evaluated pair: wall time of each scoring call over its pairs.

A call that compiled (the first of a batch shape) is left out of the
percentiles and counted apart, so p50 / p95 describe the steady state.
"""

from __future__ import annotations

import numpy as np


class LatencyLog:
  """Collects (seconds, pairs) per scoring call; `summary()` gives percentiles."""

  def __init__(self):
    self._per_pair: list[float] = []
    self.compile_calls = 0
    self.compile_seconds = 0.0

  def add(self, seconds: float, pairs: int, *, compiled: bool = False) -> None:
    """One call that scored `pairs` pairs in `seconds` (each pair gets an equal share)."""
    if pairs <= 0:
      return
    if compiled:
      self.compile_calls += 1
      self.compile_seconds += seconds
      return
    self._per_pair += [seconds / pairs] * pairs

  def summary(self) -> dict:
    """{"p50_ms", "p95_ms", "pairs", "compile_calls", "compile_seconds"}."""
    timed = np.asarray(self._per_pair)
    p50, p95 = (np.percentile(timed, [50, 95]) * 1e3) if timed.size else (None, None)
    return {"p50_ms": None if p50 is None else float(p50),
            "p95_ms": None if p95 is None else float(p95), "pairs": int(timed.size),
            "compile_calls": self.compile_calls, "compile_seconds": self.compile_seconds}
