"""How a task's encoder decodes media for its model (`MediaSpec`)."""

from __future__ import annotations

import json
import os
from typing import Sequence

from omni_rrm_jax.assembly.models import check_media_tokens
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media_batching import MediaSpec


def _read_json(folder: str, name: str) -> dict:
  path = os.path.join(folder, name) if folder else ""
  if not path or not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def make_media_spec(model_cfg, tokenizer, *, root: str, model_path: str, overrides,
                    patch_buckets: Sequence[int], audio_frame_buckets: Sequence[int] = (),
                    strict: bool = False) -> MediaSpec | None:
  """How an encoder decodes media for this model; None for a text model.

  Preprocessing: the checkpoint's `preprocessor_config.json` (if any), the
  towers' patch sizes and mel bins, then `overrides` (MediaConfig fields);
  the largest patch (audio frame) bucket caps the patches (frames) of one
  example, and the frame buckets travel with the spec to the batching.
  """
  if not hasattr(model_cfg, "host_inputs"):
    return None
  check_media_tokens(model_cfg, tokenizer)
  v = model_cfg.vision
  towers = dict(patch_size=v.patch_size, merge_size=v.spatial_merge_size,
                temporal_patch_size=v.temporal_patch_size)
  audio = getattr(model_cfg, "audio", None)
  if audio is not None:
    towers["feature_size"] = audio.num_mel_bins
  cfg = MediaConfig.from_preprocessor_config(
      _read_json(model_path, "preprocessor_config.json"),
      _read_json(model_path, "video_preprocessor_config.json") or None,
      **towers, **{k: v for k, v in dict(overrides).items() if v is not None})
  return MediaSpec(root, cfg, model_cfg.host_inputs(), max_patches=max(patch_buckets),
                   strict=strict,
                   audio_frame_buckets=tuple(audio_frame_buckets) if audio is not None else ())


def media_spec(media, model_cfg, tokenizer, *, root: str, model_path: str,
               strict: bool) -> MediaSpec | None:
  """`make_media_spec` from a `media` section: its `preprocess` overrides,
  `patch_buckets` and `audio_frame_buckets`."""
  return make_media_spec(model_cfg, tokenizer, root=root, model_path=model_path,
                         overrides=media.preprocess, patch_buckets=media.patch_buckets,
                         audio_frame_buckets=media.audio_frame_buckets, strict=strict)
