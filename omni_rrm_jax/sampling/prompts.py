"""Left-padding prompts into length buckets, so `generate` compiles a few shapes only."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bucket_length(length: int, multiple: int = 64, max_length: int | None = None) -> int:
  """`length` rounded up to a multiple of `multiple` (capped at `max_length`)."""
  if length < 1 or multiple < 1:
    raise ValueError(f"length and multiple must be >= 1, got {length} and {multiple}")
  bucket = -(-length // multiple) * multiple
  if max_length is not None:
    if length > max_length:
      raise ValueError(f"a prompt of {length} tokens exceeds max_length={max_length}")
    bucket = min(bucket, max_length)
  return bucket


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, multiple: int = 64,
             max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Packs token lists into left-padded (ids, mask) int32 arrays [B, T].

  T is the longest prompt rounded up by `bucket_length`, so batches of
  similar prompt lengths share one compiled sampler.
  """
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("need at least one prompt and no empty prompts")
  t = bucket_length(max(len(p) for p in prompts), multiple, max_length)
  ids_bt = np.full((len(prompts), t), pad_id, np.int32)
  mask_bt = np.zeros((len(prompts), t), np.int32)
  for row, prompt in enumerate(prompts):
    ids_bt[row, t - len(prompt):] = prompt
    mask_bt[row, t - len(prompt):] = 1
  return ids_bt, mask_bt
