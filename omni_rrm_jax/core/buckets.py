"""Rounding sizes up to a few allowed ones, so that jitted functions compile a few shapes.

Every distinct array shape is one XLA compilation. Sizes (sequence lengths,
vision patches, audio frames) are therefore padded up to a bucket: the
smallest of a configured list (`bucket_size`, the training and eval
batches), or the next multiple of a step capped at a maximum (`round_up`,
prompts for the sampler and the model reward, whose lengths vary widely).
Plain Python: `data/` and `sampling/` both use it.
"""

from __future__ import annotations

from typing import Sequence


def bucket_size(size: int, buckets: Sequence[int], unit: str = "token") -> int:
  """The smallest of `buckets` that holds `size`.

  Raises:
    ValueError: `size` exceeds the largest bucket (names the `unit`).
  """
  for b in sorted(buckets):
    if size <= b:
      return b
  raise ValueError(f"a size of {size} ({unit}s) exceeds the largest {unit} bucket "
                   f"{max(buckets)}")


def round_up(length: int, multiple: int, max_length: int | None = None) -> int:
  """`length` rounded up to a multiple of `multiple`, capped at `max_length`.

  Raises:
    ValueError: a length or multiple below 1, or `length` above `max_length`.
  """
  if length < 1 or multiple < 1:
    raise ValueError(f"length and multiple must be >= 1, got {length} and {multiple}")
  if max_length is not None and length > max_length:
    raise ValueError(f"{length} tokens exceed max_length={max_length}")
  bucket = -(-length // multiple) * multiple
  return bucket if max_length is None else min(bucket, max_length)
