"""Packed multimodal rows (data.pack=True) through the trainer: the tiny Qwen2.5-VL RM
trains sharded over 8 devices with micro-batches, on rows holding several examples'
images and videos."""

import json
import logging
import os

import pytest

from tests.e2e.runs import load_config


@pytest.mark.slow
def test_a_packed_vl_rm_trains_sharded_over_8_devices_with_micro_batches(tmp_path, caplog):
  from omni_rrm_jax.train.loop import run
  caplog.set_level(logging.INFO, logger="omni_rrm_jax.train.input_tallies")
  config = load_config("rm", "tiny_vl", **{
      # Rows of 256 tokens and up to 256 patches: several images / videos a row.
      "data.pack": True, "data.pack_length": 256, "media.patch_buckets": (0, 64, 256),
      "optim.grad_accum_steps": 2, "train.num_steps": 4,
      "optim.warmup_steps": 1, "train.progress_bar": False, "train.eval_every": 1000,
      "train.log_every": 1, "data.synthetic_train": 64, "data.synthetic_eval": 16,
      "export.at_end": False})
  summary = run(config, str(tmp_path))
  batch_size = config.data.batch_size
  assert summary["step"] == 4 and summary["inputs"]["examples"] == 4 * batch_size
  assert summary["eval"]["num_pairs"] == 16 and summary["nonfinite_skipped"] == 0
  shapes = [r.getMessage() for r in caplog.records if "batch shape" in r.getMessage()]
  assert shapes and all("vision_patches" in m for m in shapes)
  # A step's examples take fewer packed rows than the batch size.
  assert not [m for m in shapes if f"input_ids': ({batch_size}," in m], shapes
  rows = [json.loads(l) for l in open(os.path.join(tmp_path, "metrics.jsonl"))]
  assert all(r["loss"] == r["loss"] for r in rows if r["split"] == "train")  # finite
