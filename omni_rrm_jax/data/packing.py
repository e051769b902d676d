"""Packing several short examples into each row of a batch.

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
max(len chosen, len rejected) of the row's capacity and starts at the same
slot on both sides (the shorter side's extra slots are padding), so the
pair's media, media index and positions serve both rows, as unpacked.

Multimodal examples (`media=MediaPacking(...)`) bring their media along:
a row's patches and audio frames are its examples' in segment order, each
item keeping its own grid and clip layout (`media_batching.merge_row_media`),
and each example keeps the M-RoPE ids it has alone. A row holds at most the
largest patch and frame bucket (a second and third capacity of the packer);
the batch's rows are padded to the smallest buckets that hold its fullest
row, agreed between processes like the row count (`packed_needs`).
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
from omni_rrm_jax.data.media_batching import collate_media, media_size, merge_row_media


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


@dataclasses.dataclass(frozen=True)
class MediaPacking:
  """How a packed batch's media are padded (the bucket scheme of unpacked rows).

  Attributes:
    patch_buckets: allowed padded patch counts per row; the largest is the
      most patches one row may hold.
    merge_unit: patches per merged vision token.
    audio_frame_buckets: allowed padded audio frame counts per row (models
      with an audio encoder); the largest is the most frames one row holds.
  """
  patch_buckets: tuple[int, ...]
  merge_unit: int
  audio_frame_buckets: tuple[int, ...] = ()

  @property
  def row_capacity(self) -> tuple[int, int]:
    """(patches, frames) one packed row may hold."""
    return max(self.patch_buckets), max(self.audio_frame_buckets, default=0)


def example_size(example: dict[str, Any], kind: BatchContract) -> int:
  """Row capacity an example takes: its longest sequence field (a pair's
  longer side)."""
  return max(len(example[f]) for f in kind.sequence_fields)


def first_fit_decreasing(sizes: Sequence[int], capacity: int, max_segments: int,
                         media_sizes: Sequence[Sequence[int]] | None = None,
                         media_capacity: Sequence[int] = ()) -> list[list[int]]:
  """Bins of example indices, each bin's sizes summing to at most `capacity`
  and holding at most `max_segments` indices.

  Examples are placed longest first (ties in index order) into the first row
  with room, a new row opened when none has; each row lists its indices in
  ascending order. Deterministic: the same sizes give the same rows. With
  `media_sizes` (per example, e.g. (patches, frames)) a row's media sums
  must also stay within `media_capacity`.

  Raises:
    ValueError: when an example is longer than `capacity` (or has more media
      than `media_capacity`).
  """
  if max_segments < 1:
    raise ValueError(f"max_segments must be >= 1, got {max_segments}")
  k = len(media_capacity)
  media = np.zeros((len(sizes), k), np.int64) if media_sizes is None else np.asarray(
      media_sizes, np.int64).reshape(len(sizes), k)
  cap = np.asarray(media_capacity, np.int64)
  rows: list[list[int]] = []
  free: list[int] = []
  free_media: list[np.ndarray] = []
  for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
    size = int(sizes[i])
    if size > capacity:
      raise ValueError(f"an example of {size} tokens does not fit a packed row of {capacity}")
    if (media[i] > cap).any():
      raise ValueError(f"an example's media {media[i].tolist()} do not fit a packed row's "
                       f"{cap.tolist()}")
    for r, row in enumerate(rows):
      if free[r] >= size and len(row) < max_segments and (free_media[r] >= media[i]).all():
        row.append(i)
        free[r] -= size
        free_media[r] = free_media[r] - media[i]
        break
    else:
      rows.append([i])
      free.append(capacity - size)
      free_media.append(cap - media[i])
  return [sorted(row) for row in rows]


def _real(examples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  return [ex for ex in examples if int(ex.get("index", 0)) >= 0]


def _has_media(examples: Sequence[dict[str, Any]]) -> bool:
  return any("vision_patches" in ex for ex in examples)


def pack_rows(examples: Sequence[dict[str, Any]], kind: BatchContract, length: int,
              max_segments: int, media: MediaPacking | None = None) -> list[list[int]]:
  """The rows (indices into the real examples, `index >= 0`) of a packed batch."""
  real = _real(examples)
  sizes = [example_size(ex, kind) for ex in real]
  if not _has_media(real):
    return first_fit_decreasing(sizes, length, max_segments)
  if media is None:
    raise ValueError("the examples carry media: packing them needs `media` (MediaPacking)")
  return first_fit_decreasing(sizes, length, max_segments, [media_size(ex) for ex in real],
                              media.row_capacity)


def packed_needs(examples: Sequence[dict[str, Any]], kind: BatchContract, spec: PackSpec,
                 media: MediaPacking | None = None) -> np.ndarray:
  """(rows, most patches in a row, most audio frames in a row) this process's
  examples need (rows before rounding: `rows_for`), for processes to agree on."""
  real = _real(examples)
  rows = pack_rows(real, kind, spec.length, spec.max_segments, media)
  if not _has_media(real):
    return np.asarray([len(rows), 0, 0], np.int64)
  sizes = np.asarray([media_size(ex) for ex in real], np.int64).reshape(-1, 2)
  most = np.max([sizes[row].sum(0) for row in rows], axis=0) if rows else np.zeros(2, np.int64)
  return np.asarray([len(rows), *most.tolist()], np.int64)


def rows_for(needed: int, row_multiple: int) -> int:
  """`needed` rounded up to a positive multiple of `row_multiple`."""
  return max(1, -(-needed // row_multiple)) * row_multiple


def segment_key(field: str) -> str:
  """The segment-ids key of a token field: `segment_ids` for `input_ids`,
  else prefixed (`chosen_segment_ids`)."""
  return "segment_ids" if field == "input_ids" else f"{field}_segment_ids"


def collate_packed(examples: Sequence[dict[str, Any]], *, kind: BatchContract, num_rows: int,
                   length: int, max_segments: int, pad_id: int,
                   media: MediaPacking | None = None,
                   global_needs: Sequence[int] | None = None) -> dict[str, np.ndarray]:
  """Packs encoded examples into `num_rows` rows of `length` tokens.

  Keys: per token field its ids, attention mask and segment ids [R, L]
  (`segment_key`); the padded fields [R, L]; the row fields and `ROW_META`
  [R, S] per segment (an empty segment is invalid, with index -1). Segment
  j of a row starts at the same slot in every token field. Examples with
  media add the keys of `media_batching.collate_media` for the packed rows
  (patches and frames padded to `media`'s buckets, at least those holding
  `global_needs[1:]`; with audio, `max_segments - 1` more windows a row, as
  a row's clips each end in their own window).

  Raises:
    ValueError: when the examples need more than `num_rows` rows, or carry
      media without `media`.
  """
  real = _real(examples)
  rows = pack_rows(real, kind, length, max_segments, media)
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
  # Filler examples count here: a process whose share is all filler still
  # builds the media keys the others build.
  with_media = _has_media(examples)
  if with_media and media is None:
    raise ValueError("the examples carry media: packing them needs `media` (MediaPacking)")
  row_media = []
  for r, row in enumerate(rows):
    start, starts = 0, []
    for j, i in enumerate(row):
      ex = real[i]
      starts.append(start)
      for field in kind.token_fields:
        ids = np.asarray(ex[field], np.int32)
        ids_key, mask_key = kind.token_keys(field)
        e = start + len(ids)
        batch[ids_key][r, start:e] = ids
        batch[mask_key][r, start:e] = 1
        batch[segment_key(field)][r, start:e] = j + 1
        if field == layout_field:
          for pf, _ in kind.padded_fields:
            batch[pf][r, start:e] = np.asarray(ex[pf], np.int32)
      start += example_size(ex, kind)
      for field in kind.row_fields:
        batch[field][r, j] = ex[field]
      for field in ROW_META:
        batch[field][r, j] = ex[field]
    if with_media:
      row_media.append(merge_row_media([real[i] for i in row], starts, length))
  if with_media:
    empty = merge_row_media([_no_media_like(examples[0])], [0], length)
    row_media += [empty] * (num_rows - len(row_media))
    needs = (0, 0) if global_needs is None else tuple(global_needs)[1:3]
    batch.update(collate_media(row_media, length=length, patch_buckets=media.patch_buckets,
                               merge_unit=media.merge_unit,
                               audio_frame_buckets=media.audio_frame_buckets,
                               min_patches=int(needs[0]), min_frames=int(needs[1]),
                               extra_windows=max_segments - 1))
  return batch


def _no_media_like(example: dict[str, Any]) -> dict[str, Any]:
  """The media keys of an empty row: `example`'s, each with no items."""
  out = {k: np.asarray(v)[:0] for k, v in example.items()
         if k.startswith(("vision_", "audio_")) or k == "input_features"}
  out["input_features"] = np.asarray(example.get("input_features", np.zeros((0, 0))))[:, :0]
  out["position_ids"] = np.zeros((3, 0), np.int32)
  out["media_index"] = np.zeros((0,), np.int32)
  if "audio_index" in example:
    out["audio_index"] = np.zeros((0,), np.int32)
  else:
    out.pop("input_features")
  return out
