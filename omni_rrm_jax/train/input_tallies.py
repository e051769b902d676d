"""Host-side tallies of a training run's input: examples, truncations, invalid rows, batch shapes.

  counts, shapes = InputCounts(), BatchShapes()
  for batch in stream:                 # host batches from `data.pipeline.make_dataset`
    counts.add(batch); shapes.add(batch)
  summary["inputs"] = counts.as_dict() # collective with several processes
"""

from __future__ import annotations

import collections
import logging
import time

from omni_rrm_jax.core.batch_contract import AUDIO_KEYS, HOST_ONLY
from omni_rrm_jax.core.multihost import allgather
from omni_rrm_jax.data.tokenize import INVALID_REASONS

log = logging.getLogger(__name__)


class InputCounts:
  """Host-side tallies of what the pipeline marked: truncations and invalid rows."""

  def __init__(self):
    self.examples = 0
    self.truncated = 0
    self.tokens = 0  # this process's non-padding tokens (every sequence of a row)
    self.invalid = collections.Counter()

  def add(self, batch) -> None:
    real = batch["index"] >= 0  # [B], or [B, S] per segment of packed rows
    masks = [v for k, v in batch.items() if k.endswith("attention_mask") and k not in AUDIO_KEYS]
    # Packed rows hold real examples only; padded rows may be fillers.
    self.tokens += sum(int((v if real.ndim > 1 else v[real]).sum()) for v in masks)
    self.examples += int(real.sum())
    self.truncated += int(batch["truncated"][real].sum())
    for reason in batch["invalid_reason"][real & ~batch["valid"]]:
      self.invalid[INVALID_REASONS[int(reason)]] += 1

  def as_dict(self) -> dict:
    """The tallies of all processes (collective with several)."""
    local = [self.examples, self.truncated, *(self.invalid[r] for r in INVALID_REASONS)]
    total = allgather(local).sum(axis=0)
    invalid = {r: int(n) for r, n in zip(INVALID_REASONS, total[2:]) if n}
    return {"examples": int(total[0]), "truncated": int(total[1]), "invalid": invalid}


class BatchShapes:
  """The distinct shapes of device batches: each is one compilation of the step,
  so a growing count points at unbucketed inputs."""

  def __init__(self):
    self.seen: list[tuple] = []

  def add(self, batch) -> None:
    shape = tuple(sorted((k, v.shape) for k, v in batch.items() if k not in HOST_ONLY))
    if shape not in self.seen:
      self.seen.append(shape)
      sizes = {k: v for k, v in shape if k.endswith(("input_ids", "vision_patches"))}
      log.info("batch shape #%d: %s", len(self.seen), sizes)


class TokenRate:
  """Tokens per second of the whole run between two readings of a token count.

  Only this process's batches are counted; as every process feeds batches of
  one shape, that count times the number of processes estimates the run's.
  """

  def __init__(self, num_processes: int = 1):
    self.num_processes = num_processes
    self._last = (time.perf_counter(), 0)

  def rate(self, tokens: int) -> float:
    """Tokens per second since the previous call (or since construction)."""
    now = time.perf_counter()
    then, before = self._last
    self._last = (now, tokens)
    return (tokens - before) * self.num_processes / max(now - then, 1e-9)


class DataWait:
  """The share of wall time the loop spends waiting for its next batch, between
  two readings. The step is dispatched without waiting for the device, so while
  the workers keep up, taking the next batch costs next to nothing; a share
  near 1 says the input pipeline, not the step, sets the pace."""

  def __init__(self):
    self._waited = 0.0
    self._since = time.perf_counter()

  def next(self, iterator):
    """`next(iterator)`, timed."""
    start = time.perf_counter()
    item = next(iterator)
    self._waited += time.perf_counter() - start
    return item

  def fraction(self) -> float:
    """The share of the wall time since the previous call (or construction)."""
    now = time.perf_counter()
    share = self._waited / max(now - self._since, 1e-9)
    self._waited, self._since = 0.0, now
    return share
