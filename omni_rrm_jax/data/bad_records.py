"""Skip-and-count bookkeeping for records that cannot be used.

A corrupt row in a data set must neither crash a run hours in nor vanish
silently. Readers hand every row's fate to a `BadRecordCounter`: kept, skipped
(with the `BadRecord` reason), or kept but flagged as degenerate. Its
`summary()` is the one line that goes into the log; `examples` say where to
look. Strict mode (in `readers.read_records`) turns the first skip into an
error instead.
"""

from __future__ import annotations

import collections

from omni_rrm_jax.data.records import BadRecord


class BadRecordCounter:
  """Counts kept, skipped and flagged records, by reason.

  Attributes:
    kept: records that came through (flagged ones included).
    skipped: reason -> number of rows skipped for it.
    flagged: reason -> number of kept records with that degeneracy.
    examples: reason -> the first few "file:line: message" strings, for both
      skipped and flagged reasons.
  """

  def __init__(self, max_examples: int = 3):
    """Args: max_examples: how many locations to remember per reason."""
    self.max_examples = max_examples
    self.kept = 0
    self.skipped: collections.Counter[str] = collections.Counter()
    self.flagged: collections.Counter[str] = collections.Counter()
    self.examples: dict[str, list[str]] = {}

  @property
  def num_skipped(self) -> int:
    return sum(self.skipped.values())

  @property
  def num_flagged(self) -> int:
    return sum(self.flagged.values())

  @property
  def num_rows(self) -> int:
    """Every row seen: kept plus skipped."""
    return self.kept + self.num_skipped

  def keep(self) -> None:
    self.kept += 1

  def skip(self, error: BadRecord) -> None:
    """Records a skipped row; `error.where` locates it."""
    self.skipped[error.reason] += 1
    self._remember(error.reason, str(error))

  def skip_or_raise(self, error: BadRecord, where: str | None, strict: bool) -> None:
    """Skips a bad row at `where` (unless the error already locates it), or with
    `strict` raises the one-line `ValueError` that stops the run."""
    error.where = error.where or where
    if strict:
      raise ValueError(f"{error} (strict mode: bad records are fatal)") from error
    self.skip(error)

  def flag(self, reason: str, where: str | None) -> None:
    """Records a degeneracy of a row that is kept (call `keep` as well)."""
    self.flagged[reason] += 1
    self._remember(reason, f"{where}: {reason}" if where else reason)

  def _remember(self, reason: str, example: str) -> None:
    seen = self.examples.setdefault(reason, [])
    if len(seen) < self.max_examples:
      seen.append(example)

  def summary(self) -> str:
    """One line for the log, e.g. "2308 kept, 4 skipped (identical responses: 4)"."""
    parts = [f"{self.kept} kept"]
    if self.skipped:
      parts.append(f"{self.num_skipped} skipped ({_tally(self.skipped)})")
    if self.flagged:
      parts.append(f"{self.num_flagged} kept but flagged ({_tally(self.flagged)})")
    return ", ".join(parts)

  def __repr__(self) -> str:
    return f"BadRecordCounter({self.summary()})"


def _tally(counts: collections.Counter[str]) -> str:
  # Most frequent first, ties by name, so the line is stable from run to run.
  ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
  return "; ".join(f"{reason}: {n}" for reason, n in ordered)
