"""A tiny random Qwen2.5-VL with peaked outputs, and multimodal prompts for it.

The model is tests/models/test_qwen2_5_vl.py's configuration with the
vocabulary projection scaled up (as `sharp_model.py` does for Qwen2), so
greedy tokens are decided by the model rather than by rounding, and the
vision merger's output scaled up, so the pixels change what it writes. Prompts are
built as the data pipeline builds them: per-example media arrays
(`media_batching.example_arrays`), collated (`collate_media`) and aligned with
the left-padded tokens (`sampling.prompts.left_pad_media`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from typing import Sequence

import numpy as np

from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media_batching import DecodedMedia, MediaSpec, collate_media, example_arrays
from omni_rrm_jax.sampling.prompts import left_pad, left_pad_media
from tests.models.test_qwen2_5_vl import (IMAGE, PAD, PATCH_DIM, TEXT_CONFIG, VEND,
                                          VIDEO, VISION_CONFIG, VSTART, patches, tokens_of)

_ROOT = tempfile.mkdtemp(prefix="omni_rrm_sampling_vl_")
MERGE_UNIT = 4


@functools.cache
def sharp_vl() -> str:
  """Builds the model with torch (fixed seed), saves it, returns the folder."""
  import torch
  import transformers
  torch.manual_seed(2512)
  config = transformers.Qwen2_5_VLConfig(
      text_config=TEXT_CONFIG, vision_config=VISION_CONFIG, image_token_id=IMAGE,
      video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND)
  model = transformers.Qwen2_5_VLForConditionalGeneration(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or "ln_q" in name or name.endswith(".bias"):
        p.add_(0.1 * torch.randn_like(p))
      if name.endswith(("q_proj.weight", "k_proj.weight")):
        p.mul_(15.0)
      if name == "lm_head.weight":
        p.mul_(20.0)
      if "merger.mlp.2" in name:
        p.mul_(30.0)  # media tokens as loud as text ones, so the pixels steer the output
  folder = os.path.join(_ROOT, "qwen2_5_vl_sharp")
  model.save_pretrained(folder)
  return folder


@dataclasses.dataclass(frozen=True)
class Prompt:
  """One prompt: text ids around its media, and the media (patches, grids)."""
  ids: list[int]
  images: tuple = ()
  videos: tuple = ()
  seconds: tuple = ()
  seed: int = 0

  @property
  def image_patches(self) -> np.ndarray:
    return patches(self.images, self.seed) if self.images else np.zeros((0, PATCH_DIM),
                                                                        np.float32)

  @property
  def video_patches(self) -> np.ndarray:
    return patches(self.videos, self.seed + 1) if self.videos else np.zeros((0, PATCH_DIM),
                                                                            np.float32)


def text(n: int, seed: int) -> list[int]:
  return [int(x) for x in np.random.RandomState(seed).randint(3, 80, size=n)]


def media(kind: int, grid) -> list[int]:
  return [VSTART] + [kind] * tokens_of(grid) + [VEND]


def media_spec(model_cfg, max_patches: int = 1024) -> MediaSpec:
  v = VISION_CONFIG
  config = MediaConfig(patch_size=v["patch_size"], merge_size=v["spatial_merge_size"],
                       temporal_patch_size=v["temporal_patch_size"])
  return MediaSpec(_ROOT, config, model_cfg.host_inputs(), max_patches=max_patches)


def example(prompt: Prompt, spec: MediaSpec) -> dict:
  """The per-example media arrays of one prompt, as the data pipeline makes them."""
  decoded = DecodedMedia(
      patches=np.concatenate([prompt.image_patches, prompt.video_patches]),
      image_grid_thw=np.array(prompt.images, np.int64).reshape(-1, 3),
      video_grid_thw=np.array(prompt.videos, np.int64).reshape(-1, 3),
      second_per_grid_ts=np.array(prompt.seconds or [1.0] * len(prompt.videos), np.float32),
      tokens={IMAGE: [tokens_of(g) for g in prompt.images],
              VIDEO: [tokens_of(g) for g in prompt.videos]})
  return example_arrays(prompt.ids, decoded, spec)


def batch(prompts: Sequence[Prompt], spec: MediaSpec, patch_buckets: Sequence[int],
          multiple: int = 8):
  """(ids [B, T], mask [B, T], media keys) of left-padded multimodal prompts."""
  ids_bt, mask_bt = left_pad([p.ids for p in prompts], PAD, multiple=multiple)
  examples = [example(p, spec) for p in prompts]
  collated = collate_media(examples, length=ids_bt.shape[1], patch_buckets=patch_buckets,
                           merge_unit=MERGE_UNIT)
  return ids_bt, mask_bt, left_pad_media(collated, [len(p.ids) for p in prompts])


def hf_inputs(prompts: Sequence[Prompt], ids_bt, mask_bt) -> dict:
  """transformers' keyword arguments for the same prompts (media concatenated in row order)."""
  import torch

  from omni_rrm_jax.models import mrope
  kw = {"input_ids": torch.tensor(ids_bt).long(), "attention_mask": torch.tensor(mask_bt).long(),
        "mm_token_type_ids": torch.tensor(mrope.token_types(ids_bt, IMAGE, VIDEO)).long()}
  images = [g for p in prompts for g in p.images]
  videos = [g for p in prompts for g in p.videos]
  if images:
    kw["pixel_values"] = torch.tensor(np.concatenate([p.image_patches for p in prompts]))
    kw["image_grid_thw"] = torch.tensor(images)
  if videos:
    kw["pixel_values_videos"] = torch.tensor(np.concatenate([p.video_patches for p in prompts]))
    kw["video_grid_thw"] = torch.tensor(videos)
    kw["second_per_grid_ts"] = torch.tensor(
        [s for p in prompts for s in (p.seconds or [1.0] * len(p.videos))], dtype=torch.float32)
  return kw
