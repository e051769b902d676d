"""Rollout prompts of multimodal records: expanded media placeholders, per-prompt media arrays.

With a multimodal policy the encoder's `MediaSpec` decodes each record's
images, video or audio (in the Grain workers), expands the placeholders the
chat template wrote, and `prompt_example` returns the prompt's ids with its
per-example media arrays (`data.media_batching.example_arrays`). A record
whose media cannot be used (missing or corrupt file, a path escaping the media
root, too many patches, audio for a vision-only model) comes back invalid with
its reason; the loop skips and counts it.

Host batches keep each completion row's prompt media as one object (the
example dict) in a `prompt_media` column, so they concatenate, shuffle and
split into minibatches like every other column; `PromptMedia.collate` turns
a set of rows into the row-aligned device keys (`models.media_inputs`), aligned
with the left-padded prompts, their patches (and audio frames) padded to the
configured buckets.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from omni_rrm_jax.core.batch_contract import HOST_ONLY
from omni_rrm_jax.data import media_batching
from omni_rrm_jax.data.prompt_fit import fit_prompt
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.tokenize import INVALID_REASONS, ExampleEncoder
from omni_rrm_jax.sampling.prompts import left_pad_media

PROMPT_MEDIA = "prompt_media"  # the host batch column of per-row media example dicts


def _invalid(ids: Sequence[int], reason: str, spec) -> dict[str, Any]:
  """A stand-in prompt for a record whose media failed: its text, placeholders
  dropped, with empty media. It keeps the batch shape; its rows never train."""
  placeholders = set(spec.placeholder_ids.values())
  ids = [t for t in ids if t not in placeholders] or [0]
  return {"prompt_ids": np.asarray(ids, np.int32), "valid": False,
          "invalid_reason": INVALID_REASONS.index(reason),
          **media_batching.example_arrays(ids, media_batching.no_media(spec), spec)}


def prompt_example(encoder: ExampleEncoder, record: PreferenceRecord,
                   messages: list[dict[str, Any]], max_prompt_length: int,
                   text_ids: Sequence[int]) -> dict[str, Any]:
  """The prompt of `messages` with `record`'s media, or an invalid stand-in.

  Args:
    encoder: an `ExampleEncoder` with a `MediaSpec` (`encoder.media`).
    record: the record the messages were built from (its media are decoded).
    messages: the prompt turn(s), media parts first in the last user turn.
    max_prompt_length: the user text is cut from the left beyond this; media
      tokens and the template's framing are never cut (when they alone do not
      fit, the prompt is invalid: "media too long").
    text_ids: the text-only prompt (one placeholder per item), used for the
      stand-in of an invalid prompt.

  Returns:
    {"prompt_ids", "valid", "invalid_reason"} plus the per-example media keys
    of `media_batching.example_arrays`.
  """
  spec = encoder.media
  pieces, media, reason = encoder.prepare_prompt(record, messages)
  ids = None
  if reason == "ok":
    fitted = fit_prompt(pieces, max_prompt_length)
    ids, reason = (fitted[0], "ok") if fitted is not None else (None, "media too long")
  if reason != "ok":
    return _invalid(text_ids, reason, spec)
  return {"prompt_ids": np.asarray(ids, np.int32), "valid": True, "invalid_reason": 0,
          **media_batching.example_arrays(ids, media, spec)}


@dataclasses.dataclass(frozen=True)
class PromptMedia:
  """How prompt examples' media become device batch keys.

  Attributes:
    patch_buckets: allowed padded patch counts per row (the training
      config's `media.patch_buckets`); each distinct one compiles once.
    merge_unit: patches per merged vision token.
    audio_frame_buckets: allowed padded log-mel frame counts (audio models).
  """
  patch_buckets: tuple[int, ...]
  merge_unit: int
  audio_frame_buckets: tuple[int, ...] = ()

  @classmethod
  def from_spec(cls, spec, patch_buckets: Sequence[int]) -> PromptMedia:
    return cls(tuple(patch_buckets), spec.merge_unit, tuple(spec.audio_frame_buckets))

  def collate(self, examples: Sequence[Mapping[str, Any]], width: int,
              min_needs: Sequence[int] = (0, 0)) -> dict[str, np.ndarray]:
    """Row-aligned media keys of prompts left-padded to `width` columns.

    Args:
      examples: per-row prompt examples (`prompt_example`), repeated as the
        rows repeat them.
      width: the prompts' padded width; each prompt sits flush right.
      min_needs: pad to at least the buckets of these (vision patches, audio
        frames): the `media_needs` of the whole global batch.
    """
    collated = media_batching.collate_media(
        list(examples), length=width, patch_buckets=self.patch_buckets,
        merge_unit=self.merge_unit, audio_frame_buckets=self.audio_frame_buckets,
        min_patches=int(min_needs[0]), min_frames=int(min_needs[1]))
    aligned = left_pad_media(collated, [len(ex["prompt_ids"]) for ex in examples])
    return {k: v for k, v in aligned.items() if k not in HOST_ONLY}


def object_column(items: Sequence[Any]) -> np.ndarray:
  """A 1-D object array of `items` (dicts stay whole, unlike `np.asarray`)."""
  out = np.empty(len(items), dtype=object)
  out[:] = list(items)
  return out
