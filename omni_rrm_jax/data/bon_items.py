"""Best-of-N items: one prompt with N candidate answers, and their quality when known.

Two row kinds are read (JSONL, JSON or Parquet, as `readers.read_records`):

  native        `prompt`, `candidates` (a list of answers), optional `quality`
                (one number per candidate: a reward, a 0/1 correctness, a
                human score; higher is better), `id`, `subset`.
  rewardbench2  RewardBench 2's rows: `chosen` and `rejected` lists become the
                candidates, with quality 1 for a chosen answer and 0 for a
                rejected one.

Candidates are put in a seeded order per item (a hash of seed and id), so a
picker that prefers the first position gains nothing from the file's order
(RewardBench 2 lists the chosen answer first). Bad rows are skipped and
counted, as for preference records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Iterator, Mapping

import numpy as np

from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.chat_rows import prompt_text
from omni_rrm_jax.data.readers import file_rows
from omni_rrm_jax.data.records import BadRecord


@dataclasses.dataclass(frozen=True)
class BonItem:
  """One prompt and its candidates.

  Attributes:
    id: the row's id, or "<file stem>/<row index>".
    prompt: the user turn.
    candidates: the answers, in the item's seeded order.
    quality: one number per candidate (higher is better), or None.
    subset: the source split, or None.
  """
  id: str
  prompt: str
  candidates: tuple[str, ...]
  quality: tuple[float, ...] | None = None
  subset: str | None = None


def _order(item_id: str, n: int, seed: int) -> np.ndarray:
  digest = hashlib.sha256(f"{seed}:{item_id}".encode("utf-8")).digest()
  return np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(n)


def _texts(row: Mapping[str, Any], key: str) -> list[str]:
  value = row.get(key)
  if not isinstance(value, (list, tuple)) or not value or not all(
      isinstance(v, str) for v in value):
    raise BadRecord(f"{key} must be a non-empty list of strings")
  return list(value)


def bon_item(row: Any, item_id: str, seed: int = 0) -> BonItem:
  """The item of one decoded row; raises BadRecord for a row it cannot use."""
  if not isinstance(row, Mapping):
    raise BadRecord("row is not a JSON object", f"got {type(row).__name__}")
  if "candidates" in row:
    candidates = _texts(row, "candidates")
    quality = row.get("quality")
    if quality is not None:
      if (not isinstance(quality, (list, tuple)) or len(quality) != len(candidates) or
          not all(isinstance(q, (int, float)) and not isinstance(q, bool) for q in quality)):
        raise BadRecord("quality must be one number per candidate")
      quality = [float(q) for q in quality]
  elif "chosen" in row and "rejected" in row:
    chosen, rejected = _texts(row, "chosen"), _texts(row, "rejected")
    candidates, quality = chosen + rejected, [1.0] * len(chosen) + [0.0] * len(rejected)
  else:
    raise BadRecord("a Best-of-N row needs candidates, or chosen and rejected lists")
  if len(candidates) < 2:
    raise BadRecord("a Best-of-N row needs at least two candidates")
  prompt = prompt_text(row.get("prompt"), "prompt")
  if not prompt.strip():
    raise BadRecord("empty prompt")
  order = _order(item_id, len(candidates), seed)
  subset = row.get("subset")
  return BonItem(
      id=item_id, prompt=prompt, candidates=tuple(candidates[i] for i in order),
      quality=None if quality is None else tuple(quality[i] for i in order),
      subset=subset if isinstance(subset, str) and subset else None)


def read_bon_items(path: str | os.PathLike[str], *, seed: int = 0,
                   counter: BadRecordCounter | None = None, strict: bool = False,
                   limit: int | None = None) -> Iterator[BonItem]:
  """Best-of-N items from a file or folder; bad rows skipped and counted in
  `counter` (or, with `strict`, a ValueError naming file and line)."""
  counter = BadRecordCounter() if counter is None else counter
  produced = 0
  for file, index, where, row in file_rows(path):
    if limit is not None and produced >= limit:
      return
    name = file.name.split(".")[0]
    try:
      if isinstance(row, BadRecord):
        raise row
      raw_id = row.get("id") if isinstance(row, Mapping) else None
      item_id = str(raw_id) if isinstance(raw_id, (str, int)) and str(raw_id) else (
          f"{name}/{index}")
      item = bon_item(row, item_id, seed)
    except BadRecord as e:
      counter.skip_or_raise(e, where, strict)
      continue
    counter.keep()
    produced += 1
    yield item
