"""Metrics to a JSONL file and TensorBoard event files in the workdir."""

from __future__ import annotations

import json
import math
import os
from typing import Mapping


def _scalar(value) -> float | None:
  try:
    value = float(value)
  except (TypeError, ValueError):
    return None
  return value


class MetricWriter:
  """Writes `{name: scalar}` per step; only process 0 writes.

  `metrics.jsonl` gets one object per call (`{"step": n, "split": ..., ...}`,
  non-finite values as null) and `tensorboard/` gets `split/name` scalars.
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # TensorBoard output is optional; JSONL is always written
      self._tb = None

  def write(self, step: int, metrics: Mapping[str, object], split: str = "train") -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "split": split}
    for name, value in metrics.items():
      v = _scalar(value)
      if v is None:
        continue
      row[name] = v if math.isfinite(v) else None
      if self._tb is not None and math.isfinite(v):
        self._tb.add_scalar(f"{split}/{name}", v, int(step))
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if not self.enabled:
      return
    self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
