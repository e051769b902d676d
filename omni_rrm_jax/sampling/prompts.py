"""Left-padding prompts into length buckets, so `generate` compiles a few shapes only.

Multimodal prompts also carry sequence-aligned media keys (M-RoPE
`position_ids`, `media_index`); batches are collated with those padded on
the right, and `left_pad_media` moves them flush right beside the tokens.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from omni_rrm_jax.core.batch_contract import CORE_MEDIA_KEYS
from omni_rrm_jax.core.buckets import round_up


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, multiple: int = 64,
             max_length: int | None = None, min_length: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Packs token lists into left-padded (ids, mask) int32 arrays [B, T].

  T is the longest prompt (or `min_length`, when longer: the longest prompt
  of a global batch whose other rows live on other processes) rounded up by
  `core.buckets.round_up`, so batches of similar prompt lengths share one compiled
  sampler.
  """
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("need at least one prompt and no empty prompts")
  t = round_up(max(min_length, *(len(p) for p in prompts)), multiple, max_length)
  ids_bt = np.full((len(prompts), t), pad_id, np.int32)
  mask_bt = np.zeros((len(prompts), t), np.int32)
  for row, prompt in enumerate(prompts):
    ids_bt[row, t - len(prompt):] = prompt
    mask_bt[row, t - len(prompt):] = 1
  return ids_bt, mask_bt




def left_pad_media(media: Mapping[str, np.ndarray], lengths_b: Sequence[int]) -> dict:
  """Right-padded media batch keys -> aligned with left-padded prompts.

  Each row's first `lengths_b[row]` entries along the token axis of the
  sequence keys (`position_ids` [B, 3, T], `media_index` [B, T]) move flush
  right, their padding (position 0, index -1) to the left, as `left_pad`
  places the tokens. Other keys (patches, layouts) pass through.
  """
  out = dict(media)
  for key in CORE_MEDIA_KEYS:  # the media keys that run along the token axis
    if key not in media:
      continue
    x = np.asarray(media[key])
    t = x.shape[-1]
    shifted = np.empty_like(x)
    for row, length in enumerate(lengths_b):
      if not 0 < length <= t:
        raise ValueError(f"row {row}: prompt length {length} does not fit {t} columns")
      shifted[row] = np.roll(x[row], t - length, axis=-1)
    out[key] = shifted
  return out


def media_needs(examples: Sequence[Mapping[str, Any]]) -> np.ndarray:
  """(vision patches, audio frames) of the largest of `examples` (per-example
  media arrays): processes that build one global batch pad to the maximum of
  these over all of them."""
  patches = max(len(ex["vision_patches"]) for ex in examples)
  frames = max((int(np.shape(ex["input_features"])[1]) for ex in examples
                if "audio_index" in ex), default=0)
  return np.asarray([patches, frames], np.int64)
