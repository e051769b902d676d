"""Default settings of the `eval` task; `configs/eval.py` starts here."""

from __future__ import annotations

import ml_collections

from omni_rrm_jax.sharding.config import mesh_config, rules_config
from omni_rrm_jax.train.defaults import base_config as train_base_config


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "eval"
  c.model = ml_collections.ConfigDict(dict(path="", dtype="float32"))
  c.tokenizer = ""
  c.data = ml_collections.ConfigDict(dict(
      path="", format="auto", media_root="", strict=False, limit=0, seed=0,
      max_length=2048, buckets=(256, 512, 1024, 2048), batch_size=16))
  c.data.max_record_bytes = 4 * 2**20  # a longer row is skipped ("record too large"); 0: no limit
  # Media of a multimodal model: the training defaults (set them to what the
  # model was trained with); the largest bucket caps one example's media.
  shared = train_base_config("rm")
  c.data.patch_buckets = shared.data.patch_buckets
  c.data.audio_frame_buckets = shared.data.audio_frame_buckets
  c.data.media = shared.data.media
  c.judge = ml_collections.ConfigDict(dict(max_new_tokens=384))
  c.mesh = mesh_config()
  c.rules = rules_config()
  return c
