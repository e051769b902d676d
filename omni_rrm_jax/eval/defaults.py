"""Default settings of the `eval` task; `configs/eval.py` starts here."""

from __future__ import annotations

import ml_collections

from omni_rrm_jax.sharding.config import mesh_config, rules_config


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "eval"
  c.model = ml_collections.ConfigDict(dict(path="", dtype="float32"))
  c.tokenizer = ""
  c.data = ml_collections.ConfigDict(dict(
      path="", format="auto", media_root="", strict=False, limit=0, seed=0,
      max_length=2048, buckets=(256, 512, 1024, 2048), batch_size=16))
  c.judge = ml_collections.ConfigDict(dict(max_new_tokens=384))
  c.mesh = mesh_config()
  c.rules = rules_config()
  return c
