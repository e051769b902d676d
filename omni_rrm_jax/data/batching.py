"""Padding variable-length examples into a small set of bucketed batch shapes.

Every distinct batch shape is one XLA compilation, so sequences are padded
(on the right) to the smallest configured bucket that holds the longest one,
and a short final batch is filled with invalid rows instead of shrinking.
Media patches and audio frames are bucketed the same way
(`media_batching.collate_media`), so the number of compilations is at most
len(buckets) * len(patch_buckets) * len(audio_frame_buckets).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from omni_rrm_jax.core.batch_contract import PROBE_KEYS, ROW_META, BatchContract
from omni_rrm_jax.core.buckets import bucket_size
from omni_rrm_jax.data.media_batching import collate_media



def _pad(rows: list[np.ndarray], length: int, value: int) -> np.ndarray:
  out = np.full((len(rows), length), value, np.int32)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out


def batch_needs(examples: Sequence[dict[str, Any]], kind: BatchContract) -> np.ndarray:
  """What the longest example needs: (tokens, vision patches, audio frames).

  Processes that build one global batch together agree on the maximum of
  these (one small collective) and pass it to `collate` as `global_needs`,
  so every process pads to the same buckets.
  """
  tokens = max(len(ex[f]) for ex in examples for f in kind.sequence_fields)
  patches = max((len(ex["vision_patches"]) for ex in examples if "vision_patches" in ex),
                default=0)
  frames = max((int(np.asarray(ex["input_features"]).shape[1]) for ex in examples
                if "audio_index" in ex), default=0)
  return np.asarray([tokens, patches, frames], np.int64)


def collate(examples: list[dict[str, Any]], *, kind: BatchContract, batch_size: int,
            buckets: Sequence[int], pad_id: int, patch_buckets: Sequence[int] = (),
            merge_unit: int = 4, audio_frame_buckets: Sequence[int] = (),
            global_needs: Sequence[int] | None = None) -> dict[str, np.ndarray]:
  """Stacks encoded examples into one padded batch of exactly `batch_size` rows.

  The keys are the contract's (`core.batch_contract`): each token field
  becomes ids and an attention mask, padded fields are padded with their
  value, all to one common bucket length, and row fields become [B] float32.
  For `RM_BATCH`: `chosen_input_ids`, `chosen_attention_mask`,
  `rejected_input_ids`, `rejected_attention_mask` and `margin`; for
  `SFT_BATCH`: `input_ids`, `attention_mask` and `loss_mask`. Both carry `valid`, `truncated`, `invalid_reason`,
  `modality` and `index` (the record's position in the data set; -1 for
  filler rows) per row, and SFT examples with response probes their
  `PROBE_KEYS` ([B, 2] int32). Examples encoded with a `MediaSpec` add the media
  keys of `media_batching.collate_media`, patches padded to `patch_buckets`
  (groups of `merge_unit` patches merge into one token) and, for a model with
  an audio encoder, audio frames to `audio_frame_buckets`.

  `global_needs` (`batch_needs` maximised over the processes that share the
  global batch) makes the buckets those of the whole global batch, so every
  process builds arrays of the same shapes.
  """
  if len(examples) > batch_size:
    raise ValueError(f"{len(examples)} examples for a batch of {batch_size}")
  # Filler rows repeat the first example, marked invalid: they cost compute
  # but no loss, and keep the shape fixed.
  filler = dict(examples[0], valid=False, truncated=False, invalid_reason=0, index=-1)
  examples = list(examples) + [filler] * (batch_size - len(examples))
  needs = batch_needs(examples, kind)
  if global_needs is not None:
    needs = np.maximum(needs, np.asarray(global_needs, np.int64))
  length = bucket_size(int(needs[0]), buckets)
  batch: dict[str, np.ndarray] = {}
  for field in kind.token_fields:
    rows = [np.asarray(ex[field], np.int32) for ex in examples]
    ids_key, mask_key = kind.token_keys(field)
    batch[ids_key] = _pad(rows, length, pad_id)
    batch[mask_key] = _pad([np.ones(len(r), np.int32) for r in rows], length, 0)
  for field, pad_value in kind.padded_fields:
    batch[field] = _pad([np.asarray(ex[field], np.int32) for ex in examples], length, pad_value)
  for field in kind.row_fields:
    batch[field] = np.asarray([ex[field] for ex in examples], np.float32)
  for field in ROW_META:
    batch[field] = np.asarray([ex[field] for ex in examples],
                              bool if field in ("valid", "truncated") else np.int32)
  for field in PROBE_KEYS:  # a judge example's response probes, [B, 2]
    if field in examples[0]:
      batch[field] = np.asarray([ex[field] for ex in examples], np.int32)
  if "vision_patches" in examples[0]:
    if not patch_buckets:
      raise ValueError("examples carry media but no patch_buckets were configured")
    batch.update(collate_media(examples, length=length, patch_buckets=patch_buckets,
                               merge_unit=merge_unit, audio_frame_buckets=audio_frame_buckets,
                               min_patches=int(needs[1]), min_frames=int(needs[2])))
  return batch
