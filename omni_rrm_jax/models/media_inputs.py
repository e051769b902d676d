"""Model keywords for a batch's media, shared by training, scoring and sampling.

Batches carry each row's media as row-aligned padded arrays (see
`omni_rrm_jax.data.media_batching`), in groups:

  core (with any media):
    position_ids [B, 3, T]          M-RoPE ids (rows first, unlike the model's)
    media_index [B, T]              the row's media token at each placeholder,
                                    -1 elsewhere: vision tokens first
                                    (0 .. M-1), then audio tokens (M ..)
  vision:
    vision_patches [B, N, C*T*P*P]  the row's image and video patches
    vision_perm, vision_frame, vision_window [B, N], vision_position [B, N, 2],
    vision_unperm [B, N / merge²]   the row's vision-encoder layout
  audio (Qwen2.5-Omni):
    input_features [B, mel, F]      the row's clip, frames from 0, zeros after
    feature_attention_mask [B, F]   1 at the clip's frames
    audio_frame_index, audio_frame_valid [B, C, W], audio_token_valid [B, C, N],
    audio_pool_index [B, P, 2]      the row's audio-encoder window layout

Each group comes whole or not at all; a batch may carry vision without
audio (a Qwen2.5-VL model) or audio without vision, and with both the
features are concatenated [vision | audio] along the token axis, which is
the order `media_index` counts in. A batch without media keys is text only.

`media_inputs` runs the encoders once per batch row and returns the
`media_features` / `media_index` / `position_ids` keywords that the
multimodal models take instead of pixel values, features and grids. The key
names and groups are declared in `core/batch_contract.py`.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from omni_rrm_jax.core.batch_contract import check_media_keys
from omni_rrm_jax.models.audio_layout import AudioLayout, feat_extract_output_lengths
from omni_rrm_jax.models.vision_layout import VisionLayout


def has_media(batch: Mapping[str, jax.Array]) -> bool:
  return "media_index" in batch


def _vision_layout(batch) -> VisionLayout:
  return VisionLayout(perm_n=batch["vision_perm"], position_n2=batch["vision_position"],
                      frame_n=batch["vision_frame"], window_n=batch["vision_window"],
                      unperm_m=batch["vision_unperm"])


def _audio_layout(batch) -> AudioLayout:
  """Per-row layout arrays (leading row axis), as `encode_audio_rows` reads them."""
  frames_b = jnp.sum(batch["feature_attention_mask"], axis=-1, dtype=jnp.int32)
  pool_index = batch["audio_pool_index"]
  return AudioLayout(frame_index_cw=batch["audio_frame_index"],
                     frame_valid_cw=batch["audio_frame_valid"],
                     token_valid_cn=batch["audio_token_valid"], pool_index_p2=pool_index,
                     output_valid_p=jnp.ones(pool_index.shape[:2], bool),
                     feature_lens_a=frames_b,
                     output_lens_a=feat_extract_output_lengths(frames_b)[1])


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
  check_media_keys(batch)
  parts = []
  if "vision_patches" in batch:
    if not hasattr(model, "encode_vision_rows"):
      raise ValueError(f"the batch carries images or video but {type(model).__name__} has no "
                       "vision encoder")
    parts.append(model.encode_vision_rows(batch["vision_patches"], _vision_layout(batch)))
  if "input_features" in batch:
    if not hasattr(model, "encode_audio_rows"):
      raise ValueError(f"the batch carries audio but {type(model).__name__} has no audio "
                       "encoder")
    parts.append(model.encode_audio_rows(batch["input_features"], _audio_layout(batch)))
  if not parts:
    raise ValueError("the batch has a media_index but no vision or audio keys")
  dtype = jnp.result_type(*(p.dtype for p in parts))
  features_bme = jnp.concatenate([p.astype(dtype) for p in parts], axis=1)
  repeat = lambda x: jnp.repeat(x, rows_per_example, axis=0)  # noqa: E731
  return {"media_features": repeat(features_bme), "media_index": repeat(batch["media_index"]),
          "position_ids": jnp.moveaxis(repeat(batch["position_ids"]), 1, 0)}
