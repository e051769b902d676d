"""One record's media -> the model's multimodal keyword arrays.

This is the plug-in point for the input pipeline: a Grain map step calls
`encode_media` next to the token encoder, and a `BadRecord` it raises is
skipped and counted like any other bad record.
"""

from __future__ import annotations

import os

import numpy as np

from omni_rrm_jax.data.media.audio import process_audio
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media.image import process_images
from omni_rrm_jax.data.media.video import process_video
from omni_rrm_jax.data.records import PreferenceRecord, resolve_media_path


def encode_media(record: PreferenceRecord, media_root: str | os.PathLike[str],
                 cfg: MediaConfig) -> dict[str, np.ndarray]:
  """Decodes and preprocesses every media file of a record.

  Paths are resolved under `media_root` (escaping paths are refused) and
  errors name the file as the record wrote it.

  Args:
    record: a validated record.
    media_root: the directory the record's media paths are relative to.
    cfg: preprocessing constants and limits.

  Returns:
    Only the keys of the media present, with transformers' names:
    images: "pixel_values" [patches, dim] float32, "image_grid_thw" [n, 3] int64;
    video: "pixel_values_videos" [patches, dim] float32, "video_grid_thw"
      [1, 3] int64, "second_per_grid_ts" [1] float32;
    audio: "input_features" [1, mels, frames] float32,
      "feature_attention_mask" [1, frames] int32.
    A text record gives {}.

  Raises:
    BadRecord: a path escapes the root, or a file is missing or unusable.
  """
  out: dict[str, np.ndarray] = {}
  media = record.media
  if media.get("images"):
    names = list(media["images"])
    paths = [resolve_media_path(media_root, p, must_exist=True) for p in names]
    out.update(process_images(paths, cfg, names=names))
  if media.get("video"):
    path = resolve_media_path(media_root, media["video"], must_exist=True)
    out.update(process_video(path, cfg, name=media["video"]))
  if media.get("audio"):
    path = resolve_media_path(media_root, media["audio"], must_exist=True)
    out.update(process_audio(path, cfg, name=media["audio"]))
  return out
