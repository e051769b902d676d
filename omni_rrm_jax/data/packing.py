"""Packing several short examples into each row of a batch, for text models.

Padding every example to a bucket wastes most slots when examples are much
shorter than the bucket. Packing lays examples one after another in rows of
`length` tokens and marks each with a segment id (0 at padding, 1..k for the
examples of a row, in order); the model restricts attention to a segment and
restarts rotary positions at each segment (`models.attention.causal_mask`,
`models.attention.segment_positions`).

  rows = first_fit_decreasing(sizes, capacity=length, max_segments=S)
  batch = collate_packed(examples, kind=RM_BATCH, num_rows=R, length=L, max_segments=S, pad_id=0)

An RM pair is packed whole: segment j of row r of the chosen sequences and
segment j of row r of the rejected sequences are one pair; the pair takes
max(len chosen, len rejected) of the row's capacity, so both sides fit.
Per-example fields (`margin`, `valid` and the row bookkeeping of
`core.batch_contract.ROW_META`) become [R, S]: segment j of row r at [r, j - 1].

The packing is a pure function of a batch's examples: a batch of the same
records packs the same way on every run, so the pipeline's determinism and
exact resume are untouched. Every example of a batch goes into the packed
batch (filler examples, index < 0, are left out); the number of rows is
agreed between processes and rounded up to a multiple that the mesh and the
micro-batches split (`rows_for`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from omni_rrm_jax.core.batch_contract import ROW_META, BatchContract


@dataclasses.dataclass(frozen=True)
class PackSpec:
  """How a pipeline packs its batches.

  Attributes:
    length: tokens per packed row (at least the encoder's max_length, so any
      example fits a row alone).
    max_segments: most examples in one row (S of the [R, S] per-example fields).
    row_multiple: the packed row count is a multiple of this (so that the
      mesh's batch shards and the micro-batches split it evenly).
  """
  length: int
  max_segments: int
  row_multiple: int = 1


def example_size(example: dict[str, Any], kind: BatchContract) -> int:
  """Row capacity an example takes: its longest sequence field (a pair's
  longer side)."""
  return max(len(example[f]) for f in kind.sequence_fields)


def first_fit_decreasing(sizes: Sequence[int], capacity: int,
                         max_segments: int) -> list[list[int]]:
  """Bins of example indices, each bin's sizes summing to at most `capacity`
  and holding at most `max_segments` indices.

  Examples are placed longest first (ties in index order) into the first row
  with room, a new row opened when none has; each row lists its indices in
  ascending order. Deterministic: the same sizes give the same rows.

  Raises:
    ValueError: when an example is longer than `capacity`.
  """
  if max_segments < 1:
    raise ValueError(f"max_segments must be >= 1, got {max_segments}")
  rows: list[list[int]] = []
  free: list[int] = []
  for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
    size = int(sizes[i])
    if size > capacity:
      raise ValueError(f"an example of {size} tokens does not fit a packed row of {capacity}")
    for r, row in enumerate(rows):
      if free[r] >= size and len(row) < max_segments:
        row.append(i)
        free[r] -= size
        break
    else:
      rows.append([i])
      free.append(capacity - size)
  return [sorted(row) for row in rows]


def _real(examples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  return [ex for ex in examples if int(ex.get("index", 0)) >= 0]


def rows_needed(examples: Sequence[dict[str, Any]], kind: BatchContract, spec: PackSpec) -> int:
  """Packed rows this process's examples need (before rounding: `rows_for`)."""
  sizes = [example_size(ex, kind) for ex in _real(examples)]
  return len(first_fit_decreasing(sizes, spec.length, spec.max_segments))


def rows_for(needed: int, row_multiple: int) -> int:
  """`needed` rounded up to a positive multiple of `row_multiple`."""
  return max(1, -(-needed // row_multiple)) * row_multiple


def segment_key(field: str) -> str:
  """The segment-ids key of a token field: `segment_ids` for `input_ids`,
  else prefixed (`chosen_segment_ids`)."""
  return "segment_ids" if field == "input_ids" else f"{field}_segment_ids"


def collate_packed(examples: Sequence[dict[str, Any]], *, kind: BatchContract, num_rows: int,
                   length: int, max_segments: int, pad_id: int) -> dict[str, np.ndarray]:
  """Packs encoded text examples into `num_rows` rows of `length` tokens.

  Keys: per token field its ids, attention mask and segment ids [R, L]
  (`segment_key`); the padded fields [R, L], laid out as the first token
  field; the row fields and `ROW_META` [R, S] per segment (an empty segment
  is invalid, with index -1).

  Raises:
    ValueError: when the examples need more than `num_rows` rows, or carry media.
  """
  real = _real(examples)
  if any("vision_patches" in ex or "media_index" in ex for ex in real):
    raise ValueError("packing takes text examples only; multimodal rows are not packed")
  rows = first_fit_decreasing([example_size(ex, kind) for ex in real], length, max_segments)
  if len(rows) > num_rows:
    raise ValueError(f"the batch's examples need {len(rows)} packed rows, only {num_rows} given")
  shape_rl, shape_rs = (num_rows, length), (num_rows, max_segments)
  batch: dict[str, np.ndarray] = {}
  for field in kind.token_fields:
    ids_key, mask_key = kind.token_keys(field)
    batch[ids_key] = np.full(shape_rl, pad_id, np.int32)
    batch[mask_key] = np.zeros(shape_rl, np.int32)
    batch[segment_key(field)] = np.zeros(shape_rl, np.int32)
  for field, pad_value in kind.padded_fields:
    batch[field] = np.full(shape_rl, pad_value, np.int32)
  for field in kind.row_fields:
    batch[field] = np.zeros(shape_rs, np.float32)
  for field in ROW_META:
    batch[field] = np.zeros(shape_rs, bool if field in ("valid", "truncated") else np.int32)
  batch["index"][:] = -1
  layout_field = kind.token_fields[0]
  for r, row in enumerate(rows):
    starts = {field: 0 for field in kind.token_fields}
    for j, i in enumerate(row):
      ex = real[i]
      for field in kind.token_fields:
        ids = np.asarray(ex[field], np.int32)
        ids_key, mask_key = kind.token_keys(field)
        s, e = starts[field], starts[field] + len(ids)
        batch[ids_key][r, s:e] = ids
        batch[mask_key][r, s:e] = 1
        batch[segment_key(field)][r, s:e] = j + 1
        if field == layout_field:
          for pf, _ in kind.padded_fields:
            batch[pf][r, s:e] = np.asarray(ex[pf], np.int32)
        starts[field] = e
      for field in kind.row_fields:
        batch[field][r, j] = ex[field]
      for field in ROW_META:
        batch[field][r, j] = ex[field]
  return batch
