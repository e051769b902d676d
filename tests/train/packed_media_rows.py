"""Tiny random Qwen2.5-VL / Omni thinker models and mixed media examples for the
packed-media tests: text-only, image (one and two), video and audio rows, encoded
as the data pipeline encodes them (`media_batching.example_arrays`)."""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

import omni_rrm_jax as orj
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media_batching import DecodedMedia, MediaSpec, example_arrays
from omni_rrm_jax.models.audio_layout import feat_extract_output_lengths

VOCAB, PAD = 101, 0
IMAGE, VIDEO, VSTART, VEND, AUDIO, ASTART, AEND = 90, 91, 92, 93, 94, 95, 96
MEL = 16
PATCH_DIM = 3 * 2 * 2 * 2
PATCH_BUCKETS = (0, 32, 96)
FRAME_BUCKETS = (0, 24, 72)  # windows of 8 frames
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            pad_token_id=PAD, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                               "mrope_section": [1, 1, 2]})
# Two blocks: one windowed, one full (per frame); windows of 2 x 2 merged tokens.
VISION = dict(depth=2, hidden_size=32, intermediate_size=40, num_heads=4, in_channels=3,
              patch_size=2, temporal_patch_size=2, spatial_merge_size=2, window_size=8,
              out_hidden_size=32, fullatt_block_indexes=[1])
AUDIO_CONFIG = dict(num_mel_bins=MEL, d_model=32, encoder_layers=1, encoder_attention_heads=4,
                    encoder_ffn_dim=48, n_window=4, output_dim=32, max_source_positions=64)


def _sharpen(model: nnx.Module, seed: int) -> nnx.Module:
  """Unit-scale random weights, so a wrong position, mask or media offset shows
  in the losses (the default init is too flat for that)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  new = []
  for key, x in zip(keys, leaves):
    noise = jax.random.normal(key, x.shape, x.dtype)
    new.append(1.0 + 0.1 * noise if x.ndim == 1 else 1.5 * noise / np.sqrt(x.shape[0]))
  return nnx.merge(graphdef, jax.tree.unflatten(tree, new), rest)


@functools.cache
def tiny_model(family: str, classifier: bool) -> nnx.Module:
  """A random fp32 Qwen2.5-VL ("vl") or Omni thinker ("omni"), RM or LM."""
  head = dict(num_labels=1, pad_token_id=PAD) if classifier else {}
  if family == "vl":
    arch = ("Qwen2_5_VLForSequenceClassification" if classifier
            else "Qwen2_5_VLForConditionalGeneration")
    hf = dict(text_config=TEXT, vision_config=dict(VISION, tokens_per_second=2),
              image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART,
              vision_end_token_id=VEND, **head)
  else:
    arch = ("Qwen2_5OmniThinkerForSequenceClassification" if classifier
            else "Qwen2_5OmniThinkerForConditionalGeneration")
    hf = dict(text_config=TEXT, vision_config=VISION, audio_config=AUDIO_CONFIG,
              image_token_index=IMAGE, video_token_index=VIDEO, audio_token_index=AUDIO,
              vision_start_token_id=VSTART, vision_end_token_id=VEND,
              audio_start_token_id=ASTART, audio_end_token_id=AEND,
              position_id_per_seconds=4, seconds_per_chunk=1, **head)
  return _sharpen(orj.from_config(arch, hf, seed=1), seed=2)


def media_spec(model_or_host) -> MediaSpec:
  """The media spec of a tiny model (or of its `host_inputs()`)."""
  host = (model_or_host.cfg.host_inputs() if hasattr(model_or_host, "cfg")
          else model_or_host)
  cfg = MediaConfig(patch_size=2, merge_size=2, temporal_patch_size=2, feature_size=MEL)
  return MediaSpec("/nonexistent", cfg, host, max_patches=max(PATCH_BUCKETS),
                   audio_frame_buckets=FRAME_BUCKETS)


def _tokens(grid) -> int:
  return int(np.prod(grid)) // 4


def _audio_tokens(frames: int) -> int:
  return int(feat_extract_output_lengths(frames)[1])


def _text(rng, n: int) -> list[int]:
  return [int(x) for x in rng.integers(3, 80, n)]


def _prompt(rng, images=(), video=None, frames=0):
  """(prompt ids, DecodedMedia): text around the items' placeholder runs."""
  ids = _text(rng, int(rng.integers(1, 4)))
  for g in images:
    ids += [VSTART] + [IMAGE] * _tokens(g) + [VEND] + _text(rng, 1)
  if video:
    ids += [VSTART] + [VIDEO] * _tokens(video) + [VEND] + _text(rng, 1)
  if frames:
    ids += [ASTART] + [AUDIO] * _audio_tokens(frames) + [AEND]
  ids += _text(rng, int(rng.integers(1, 4)))
  grids = [*images] + ([video] if video else [])
  n = sum(int(np.prod(g)) for g in grids)
  media = DecodedMedia(
      patches=rng.standard_normal((n, PATCH_DIM)).astype(np.float32),
      image_grid_thw=np.asarray(images, np.int64).reshape(-1, 3),
      video_grid_thw=np.asarray([video] if video else [], np.int64).reshape(-1, 3),
      second_per_grid_ts=np.asarray([1.5] if video else [], np.float32),
      tokens={IMAGE: [_tokens(g) for g in images], VIDEO: [_tokens(video)] if video else [],
              AUDIO: [_audio_tokens(frames)] if frames else []},
      audio_features=rng.standard_normal((MEL, frames)).astype(np.float32))
  return ids, media


def _media_kinds(audio: bool) -> list[dict]:
  kinds = [{}, {"images": [(1, 4, 6)]}, {"video": (2, 4, 4)}, {},
           {"images": [(1, 4, 4), (1, 2, 4)]}, {"images": [(1, 2, 2)]}]
  if audio:
    kinds += [{"frames": 37}, {"images": [(1, 4, 4)], "frames": 13},
              {"video": (2, 2, 4), "frames": 20}, {"frames": 9}]
  return kinds


def _meta(i: int, valid: bool = True) -> dict:
  return {"valid": valid, "truncated": False, "invalid_reason": 0 if valid else 2,
          "modality": 0, "index": i}


def rm_examples(model, seed: int = 0) -> list[dict]:
  """Encoded preference pairs over mixed media (one of them invalid); `model`
  may be a tiny model or its `host_inputs()`."""
  rng, spec = np.random.default_rng(seed), media_spec(model)
  out = []
  for i, kind in enumerate(_media_kinds(spec.has_audio)):
    prompt, media = _prompt(rng, **kind)
    c, r = _text(rng, int(rng.integers(1, 6))), _text(rng, int(rng.integers(1, 6)))
    ex = {"chosen": np.asarray(prompt + c, np.int32), "rejected": np.asarray(prompt + r, np.int32),
          "margin": float(rng.uniform(0, 0.5)), **_meta(i, valid=i != 3)}
    longer = ex["chosen"] if len(c) >= len(r) else ex["rejected"]
    ex.update(example_arrays(longer, media, spec))
    out.append(ex)
  return out


def sft_examples(model, seed: int = 1) -> list[dict]:
  """Encoded prompt + target examples over mixed media (one of them invalid)."""
  rng, spec = np.random.default_rng(seed), media_spec(model)
  out = []
  for i, kind in enumerate(_media_kinds(spec.has_audio)):
    prompt, media = _prompt(rng, **kind)
    target = _text(rng, int(rng.integers(2, 7)))
    ids = np.asarray(prompt + target, np.int32)
    ex = {"input_ids": ids, "loss_mask": np.asarray([0] * len(prompt) + [1] * len(target),
                                                    np.int32), **_meta(i, valid=i != 3)}
    ex.update(example_arrays(ids, media, spec))
    out.append(ex)
  return out
