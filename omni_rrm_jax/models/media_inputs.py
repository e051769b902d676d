"""Model keywords for a batch's media, shared by training, scoring and sampling.

Batches carry each row's media as row-aligned padded arrays (see
`omni_rrm_jax.data.media_batching`):

  vision_patches [B, N, C*T*P*P]  the row's image and video patches
  vision_perm, vision_frame, vision_window [B, N], vision_position [B, N, 2],
  vision_unperm [B, N / merge²]   the row's vision-encoder layout
  position_ids [B, 3, T]          M-RoPE ids (rows first, unlike the model's)
  media_index [B, T]              the row's media token at each placeholder,
                                  -1 elsewhere

`media_inputs` runs the encoders once per batch row and returns the
`media_features` / `media_index` / `position_ids` keywords that the
multimodal models take instead of pixel values and grids.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from omni_rrm_jax.models.vision_layout import VisionLayout

VISION_KEYS = ("vision_patches", "vision_perm", "vision_position", "vision_frame",
               "vision_window", "vision_unperm")
MEDIA_KEYS = ("position_ids", "media_index", *VISION_KEYS)


def has_media(batch: Mapping[str, jax.Array]) -> bool:
  return "media_index" in batch


def media_inputs(model: nnx.Module, batch: Mapping[str, jax.Array],
                 rows_per_example: int = 1) -> dict:
  """Model keywords for a batch's media (empty without media keys).

  The encoders run once per batch row; their tokens, the media index and the
  positions are then repeated for the `rows_per_example` consecutive model
  rows that share them (2 for the interleaved chosen / rejected rows of rm,
  G for the samples of one prompt).
  """
  if not has_media(batch):
    return {}
  if not hasattr(model, "encode_vision_rows"):
    raise ValueError(f"the batch carries media but {type(model).__name__} has no vision encoder")
  layout_b = VisionLayout(perm_n=batch["vision_perm"], position_n2=batch["vision_position"],
                          frame_n=batch["vision_frame"], window_n=batch["vision_window"],
                          unperm_m=batch["vision_unperm"])
  features_bme = model.encode_vision_rows(batch["vision_patches"], layout_b)
  repeat = lambda x: jnp.repeat(x, rows_per_example, axis=0)  # noqa: E731
  return {"media_features": repeat(features_bme), "media_index": repeat(batch["media_index"]),
          "position_ids": jnp.moveaxis(repeat(batch["position_ids"]), 1, 0)}
