"""Qwen2.5-VL: vision encoder + M-RoPE text decoder, with an LM or a score head.

The text decoder is our `DecoderLayer` stack (Qwen2 layout) fed with
three-axis rotary tables (`mrope.py`); image and video placeholder tokens are
replaced by the vision encoder's merged tokens (`vision.py`).

Static shapes under `jit`: the number of patches is the static length of
`pixel_values` / `pixel_values_videos`. Grid sizes (`image_grid_thw`,
`video_grid_thw`) and `second_per_grid_ts` are host metadata (numpy or Python
values): they fix the window layout and the M-RoPE positions, both computed
with numpy. Under `jit`, close over the grids (or pass them as tuples in
static arguments), and pass `position_ids` from `rope_index` computed
beforehand; token ids, masks and pixels may then be traced. (Without
`position_ids`, the ids and mask must be host values too.) Each distinct set
of grid sizes compiles once.

Fully traced training inputs avoid that recompile: each row carries its own
media as a padded patch buffer with a padded layout
(`VisionTransformer.encode_rows`), the positions come precomputed, and `media_index` says which
of the row's merged tokens fills each placeholder. `HostInputs` computes the
host-side parts in the data workers; `encode_vision_rows` and the
`media_features` / `media_index` keywords consume them under `jit`, so the
compiled shapes depend only on the (bucketed) patch and token counts.

Generation runs the same row path through a KV cache: the sampler encodes
each prompt's media once, then `call_cached` (`TextModel.call_cached`)
prefills with the prompt's M-RoPE ids and decodes on from the position after
each row's last prompt token (`multimodal_decode` holds the model-agnostic
side of it).

`Qwen2_5_VLForSequenceClassification` puts a bias-free score head on the same
trunk, pooled at the last non-padding token as `decoder.SequenceClassifier`.
transformers has no such class: its export is our config (`architectures`
names it) plus safetensors whose trunk tensors load into transformers'
`Qwen2_5_VLForConditionalGeneration` (which ignores `score.weight`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_rrm_jax.models import mrope
from omni_rrm_jax.models.attention import causal_mask, segment_positions
from omni_rrm_jax.models.config import DecoderConfig, decoder_config_from_hf, resolve_dtype
from omni_rrm_jax.models.decoder import (DecoderLayer, KVCache, ModelOutput,
                                         continued_positions, last_token_index,
                                         run_cached_layers, segment_last_index)
from omni_rrm_jax.models.layer_stack import layer_windows, make_layers, run_layers
from omni_rrm_jax.models.layers import DenseGeneral, Embed, RMSNorm
from omni_rrm_jax.models.vision import VisionConfig, VisionTransformer, vision_config_from_hf
from omni_rrm_jax.models.vision_layout import VisionLayout, vision_layout
from omni_rrm_jax.sharding.rules import constrain

ARCHITECTURE = "Qwen2_5_VLForConditionalGeneration"
CLASSIFIER_ARCHITECTURE = "Qwen2_5_VLForSequenceClassification"


@dataclasses.dataclass(frozen=True)
class Qwen2_5_VLConfig:
  """Text and vision configs plus the placeholder token ids.

  `architecture` and `hf_config_json` (the full transformers config) let an
  export write back the same `config.json`.
  """
  text: DecoderConfig
  vision: VisionConfig
  image_token_id: int
  video_token_id: int
  architecture: str = ARCHITECTURE
  hf_config_json: str = "{}"

  @property
  def tie_word_embeddings(self) -> bool:
    return self.text.tie_word_embeddings

  @property
  def initializer_range(self) -> float:
    return self.text.initializer_range

  @property
  def pad_token_id(self) -> int | None:
    return self.text.pad_token_id

  @property
  def num_labels(self) -> int:
    return self.text.num_labels

  def host_inputs(self) -> HostInputs:
    """The host-side preparation of fully traced inputs for this model."""
    v = self.vision
    return HostInputs(image_token_id=self.image_token_id, video_token_id=self.video_token_id,
                      spatial_merge_size=v.spatial_merge_size, window_size=v.window_size,
                      patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size,
                      tokens_per_second=float(v.tokens_per_second))


def qwen2_5_vl_config_from_hf(hf, **overrides) -> Qwen2_5_VLConfig:
  """Builds a `Qwen2_5_VLConfig` from a transformers `Qwen2_5_VLConfig`.

  Args:
    hf: the transformers config (with `text_config` and `vision_config`).
    **overrides: `dtype`, `param_dtype`, `remat` (applied to both towers),
      `attention` and `scan_layers` (the text decoder's) and `architecture`.
  """
  architecture = overrides.pop("architecture", ARCHITECTURE)
  attention = overrides.pop("attention", "reference")
  scan_layers = bool(overrides.pop("scan_layers", False))
  shared = {k: (resolve_dtype(v) if k.endswith("dtype") else v) for k, v in overrides.items()}
  unknown = set(shared) - {"dtype", "param_dtype", "remat"}
  if unknown:
    raise ValueError(f"unknown config overrides {sorted(unknown)}")
  t = hf.text_config
  text = decoder_config_from_hf(
      t, "qwen2", architecture=architecture,
      # transformers' attention ignores any head_dim field here.
      head_dim=t.hidden_size // t.num_attention_heads,
      # The top-level flag decides (transformers ties when either is set).
      tie_word_embeddings=bool(hf.tie_word_embeddings
                               or getattr(t, "tie_word_embeddings", False)),
      attention=attention, scan_layers=scan_layers, **shared)
  if "mrope_section" not in text.rope_dict:
    raise ValueError("text_config.rope_parameters has no mrope_section")
  return Qwen2_5_VLConfig(
      text=text, vision=vision_config_from_hf(hf.vision_config, **shared),
      image_token_id=hf.image_token_id, video_token_id=hf.video_token_id,
      architecture=architecture, hf_config_json=hf.to_json_string(use_diff=False))


def qwen2_5_vl_classifier_config_from_hf(hf, **overrides) -> Qwen2_5_VLConfig:
  """As `qwen2_5_vl_config_from_hf`, for the score-head variant.

  `num_labels` and `pad_token_id` are read from the top-level config (where
  transformers' sequence classifiers keep them), the pad id falling back to
  the text config's.
  """
  overrides.setdefault("architecture", CLASSIFIER_ARCHITECTURE)
  cfg = qwen2_5_vl_config_from_hf(hf, **overrides)
  pad = getattr(hf, "pad_token_id", None)
  text = dataclasses.replace(cfg.text, num_labels=getattr(hf, "num_labels", None) or 1,
                             pad_token_id=cfg.text.pad_token_id if pad is None else pad)
  return dataclasses.replace(cfg, text=text)


@dataclasses.dataclass(frozen=True)
class HostInputs:
  """The host-side (numpy) half of a fully traced call, one example at a time.

  Plain numbers only, so it pickles into data-loader worker processes, which
  call it per example before padding; the arrays then travel with the batch.

  Attributes:
    image_token_id: the image placeholder id.
    video_token_id: the video placeholder id.
    spatial_merge_size: patches merged per side into one token.
    window_size: the vision encoder's attention window, in pixels.
    patch_size: the vision patch side, in pixels.
    temporal_patch_size: frames per temporal patch.
    tokens_per_second: temporal M-RoPE ids per second of video.
    audio_token_id: None: Qwen2.5-VL has no audio encoder.
  """
  image_token_id: int
  video_token_id: int
  spatial_merge_size: int
  window_size: int
  patch_size: int
  temporal_patch_size: int
  tokens_per_second: float
  audio_token_id: int | None = None

  def vision_layout(self, grid_thw) -> dict[str, np.ndarray]:
    """The `VisionLayout` fields of one example's images and video frames.

    Returns:
      {"perm": [n], "position": [n, 2], "frame": [n], "window": [n],
      "unperm": [n / merge²]}, int32, for n patches (n = 0 without media).
    """
    grids = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    if not len(grids):
      return {"perm": np.zeros((0,), np.int32), "position": np.zeros((0, 2), np.int32),
              "frame": np.zeros((0,), np.int32), "window": np.zeros((0,), np.int32),
              "unperm": np.zeros((0,), np.int32)}
    layout = vision_layout(grids, self.spatial_merge_size, self.window_size, self.patch_size)
    return {"perm": layout.perm_n, "position": layout.position_n2.astype(np.int32),
            "frame": layout.frame_n, "window": layout.window_n, "unperm": layout.unperm_m}

  def position_ids(self, input_ids_t, image_grid_thw=None, video_grid_thw=None,
                   second_per_grid_ts=None) -> np.ndarray:
    """M-RoPE position ids int32 [3, T] of one unpadded sequence."""
    ids = np.asarray(input_ids_t).reshape(1, -1)
    grids = {k: (None if g is None or not np.size(g) else np.asarray(g).reshape(-1, 3))
             for k, g in (("image", image_grid_thw), ("video", video_grid_thw))}
    if grids["image"] is None and grids["video"] is None:
      return np.broadcast_to(np.arange(ids.shape[1], dtype=np.int32), (3, ids.shape[1])).copy()
    position_3bt, _ = mrope.get_rope_index(
        ids, None, image_grid_thw=grids["image"], video_grid_thw=grids["video"],
        second_per_grid_ts=second_per_grid_ts, image_token_id=self.image_token_id,
        video_token_id=self.video_token_id, spatial_merge_size=self.spatial_merge_size,
        tokens_per_second=self.tokens_per_second)
    return position_3bt[:, 0]


def _host(x, name: str) -> np.ndarray:
  if isinstance(x, jax.core.Tracer):
    raise TypeError(f"{name} is traced: M-RoPE positions need concrete token ids and grids; "
                    "compute position_ids with rope_index outside jit and pass them in")
  return np.asarray(x)


def rope_index(cfg: Qwen2_5_VLConfig, input_ids, attention_mask=None, image_grid_thw=None,
               video_grid_thw=None, second_per_grid_ts=None,
               mm_token_type_ids=None) -> tuple[np.ndarray, np.ndarray]:
  """(position ids [3, B, T], rope deltas [B]) of a batch, on the host.

  As transformers' forward: with no grids at all every axis counts 0..T-1
  (padding included); with grids, `mrope.get_rope_index` applies.
  """
  if image_grid_thw is None and video_grid_thw is None:
    b, t = input_ids.shape  # text only: the ids themselves may be traced
    return np.broadcast_to(np.arange(t, dtype=np.int32), (3, b, t)), np.zeros((b,), np.int32)
  host = lambda x, name: None if x is None else _host(x, name)
  return mrope.get_rope_index(
      _host(input_ids, "input_ids"), host(attention_mask, "attention_mask"),
      image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
      second_per_grid_ts=second_per_grid_ts,
      mm_token_type_ids=host(mm_token_type_ids, "mm_token_type_ids"),
      image_token_id=cfg.image_token_id, video_token_id=cfg.video_token_id,
      spatial_merge_size=cfg.vision.spatial_merge_size,
      tokens_per_second=cfg.vision.tokens_per_second)


def scatter_features(x_bte: jax.Array, placeholder_bt: jax.Array, features_me: jax.Array,
                     what: str = "media") -> jax.Array:
  """Replaces placeholder token embeddings, in row-major order, by feature rows.

  The k-th placeholder of the flattened batch takes feature row k (as torch's
  `masked_scatter`), for any number of items of any sizes across the rows.
  """
  if not isinstance(placeholder_bt, jax.core.Tracer):
    count = int(np.asarray(placeholder_bt).sum())
    if count != features_me.shape[0]:
      raise ValueError(f"{count} {what} placeholder tokens but {features_me.shape[0]} "
                       f"{what} tokens from the vision encoder")
  b, t, e = x_bte.shape
  flat = placeholder_bt.reshape(-1)
  row_n = jnp.clip(jnp.cumsum(flat, dtype=jnp.int32) - 1, 0, features_me.shape[0] - 1)
  gathered = jnp.take(features_me.astype(x_bte.dtype), row_n, axis=0).reshape(b, t, e)
  return jnp.where(placeholder_bt[..., None], gathered, x_bte)


def gather_features(x_bte: jax.Array, features_bme: jax.Array,
                    media_index_bt: jax.Array) -> jax.Array:
  """Replaces token embeddings by row-local media features, by explicit index.

  Token (b, t) takes `features_bme[b, media_index_bt[b, t]]` where the index
  is >= 0 and keeps its embedding where it is -1. Unlike `scatter_features`,
  several rows may read the same features (the chosen and rejected rows of a
  preference pair) and padded feature rows are never read.
  """
  if features_bme.shape[1] == 0:  # no media in this batch
    return x_bte
  index_bt = jnp.maximum(media_index_bt, 0)
  gathered_bte = jnp.take_along_axis(features_bme.astype(x_bte.dtype), index_bt[..., None],
                                     axis=1)
  return jnp.where((media_index_bt >= 0)[..., None], gathered_bte, x_bte)


def make_lm_head(text: DecoderConfig, tie_word_embeddings: bool,
                 rngs: nnx.Rngs | None) -> DenseGeneral | None:
  """The vocabulary head of a multimodal LM; None when it is tied to the embeddings."""
  if tie_word_embeddings:
    return None
  return DenseGeneral((text.hidden_size,), (text.vocab_size,), kernel_axes=("embed", "vocab"),
                      dtype=text.dtype, param_dtype=text.param_dtype,
                      init_std=text.initializer_range, rngs=rngs)


def make_score_head(text: DecoderConfig, rngs: nnx.Rngs | None) -> DenseGeneral:
  """The bias-free score head of a multimodal sequence classifier."""
  return DenseGeneral((text.hidden_size,), (text.num_labels,), kernel_axes=("embed", "labels"),
                      dtype=text.dtype, param_dtype=text.param_dtype,
                      init_std=text.initializer_range, rngs=rngs)


def vocab_logits(model, h_bte: jax.Array) -> jax.Array:
  """Vocabulary logits [B, T, V] of `model`'s final hidden states (its `lm_head`,
  or the token embeddings when tied)."""
  if model.lm_head is None:
    logits = model.model.embed_tokens.attend(h_bte)
  else:
    logits = model.lm_head(h_bte)
  return constrain(logits, ("batch", "length", "vocab"))


def pooled_scores(score: DenseGeneral, h_bte: jax.Array, input_ids,
                  pad_token_id: int | None, segment_ids=None,
                  num_segments: int | None = None) -> jax.Array:
  """Scores [B, num_labels] at each row's last non-padding token, or over
  packed rows (`segment_ids`) [B, num_segments, num_labels] at each segment's
  last token (a segment a row does not hold gets an arbitrary score)."""
  if segment_ids is not None:
    if num_segments is None:
      raise ValueError("packed rows (segment_ids) need num_segments, the segments per row")
    idx_bs = segment_last_index(segment_ids, num_segments)
    return score(jnp.take_along_axis(h_bte, idx_bs[:, :, None], axis=1))
  b, t = h_bte.shape[:2]
  idx_b = last_token_index(input_ids, pad_token_id, b, t)
  pooled_be = jnp.take_along_axis(h_bte, idx_b[:, None, None], axis=1)[:, 0]
  return score(pooled_be)


class TextModel(nnx.Module):
  """The language model: embeddings, `DecoderLayer`s and the final norm.

  The same parameters as `Decoder` (stacked too with `cfg.scan_layers`);
  only the rotary tables differ (M-RoPE).
  """

  def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs | None):
    self.cfg = cfg
    self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype,
                              param_dtype=cfg.param_dtype, init_std=cfg.initializer_range,
                              rngs=rngs)
    self.layers = make_layers(cfg, lambda r: DecoderLayer(cfg, r), rngs)
    self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=cfg.param_dtype,
                        rngs=rngs)

  def __call__(self, x_bte: jax.Array, position_ids_3bt: jax.Array,
               attention_mask: jax.Array | None, segment_ids=None) -> jax.Array:
    """Final normed hidden states [B, T, E]; with `segment_ids` [B, T] (packed
    rows: 0 at padding, 1..k per example) attention stays within a segment."""
    x_bte = constrain(x_bte.astype(self.cfg.dtype), ("batch", "length", "embed"))
    index_t = jnp.arange(x_bte.shape[1])
    cos, sin = mrope.mrope_cos_sin(position_ids_3bt, self.cfg.rope_dict, self.cfg.head_dim,
                                   self.cfg.max_position_embeddings)
    windows = set(layer_windows(self.cfg))
    masks = {w: causal_mask(index_t, index_t, attention_mask, w, segment_ids) for w in windows}
    x_bte = run_layers(self.layers, self.cfg, x_bte, cos, sin, masks)
    return self.norm(x_bte)

  def embed(self, input_ids: jax.Array, media_features: jax.Array | None = None,
            media_index: jax.Array | None = None) -> jax.Array:
    """Token embeddings [B, T, E], placeholders filled from row-local media features
    (`gather_features`) when given."""
    if (media_features is None) != (media_index is None):
      raise ValueError("media_features and media_index go together")
    x_bte = self.embed_tokens(input_ids)
    if media_features is not None:
      x_bte = gather_features(x_bte, media_features, media_index)
    return x_bte

  def call_cached(self, cache: KVCache, input_ids=None, attention_mask=None, position_ids=None,
                  inputs_embeds=None, media_features=None,
                  media_index=None) -> tuple[jax.Array, KVCache]:
    """Runs T new tokens per row on top of `cache` (prefill or one decode step).

    `Decoder.call_cached` with three-axis positions and row-local media. The
    cache's `next_position_b` holds one past the position of each row's last
    real token, so decoding continues the prompt's text positions with the
    same id on all three axes: where `rope_index` puts text appended to the
    prompt (so a sampled completion is positioned as in training), and what
    transformers' `generate` does. (transformers' rope deltas continue from
    the prompt's largest position instead; the two differ only when a video's
    temporal ids outrun its spatial extent near the end of the prompt.)

    Args:
      cache: the `KVCache` so far (`init_cache(cfg, ...)`; empty for a prefill).
      input_ids: [B, T] new token ids (or `inputs_embeds` [B, T, E]).
      attention_mask: [B, T] 1 at real new tokens, 0 at padding; all real when
        None. Padded slots are never attended to.
      position_ids: int [3, B, T] M-RoPE ids of the new tokens (or [B, T], used
        on all three axes), e.g. a multimodal prompt's from `HostInputs`. By
        default each row counts on from `cache.next_position_b` over its real
        tokens.
      inputs_embeds: [B, T, E], instead of `input_ids`.
      media_features: [B, M, E] each row's media tokens (`encode_vision_rows`).
      media_index: int [B, T] the row of `media_features` each token takes, -1
        elsewhere (see `gather_features`).

    Returns:
      (final normed hidden states [B, T, E], the updated cache).
    """
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("pass exactly one of input_ids or inputs_embeds")
    if inputs_embeds is None:
      x_bte = self.embed(input_ids, media_features, media_index)
    elif media_features is not None:
      raise ValueError("media_features need input_ids (to find the placeholder tokens)")
    else:
      x_bte = inputs_embeds
    x_bte = constrain(x_bte.astype(self.cfg.dtype), ("batch", "length", "embed"))
    b, t = x_bte.shape[:2]
    if t > cache.max_length:
      raise ValueError(f"{t} new tokens do not fit a cache of {cache.max_length} slots")
    valid_bt = (jnp.ones((b, t), bool) if attention_mask is None
                else attention_mask.astype(bool))
    if position_ids is None:
      position_ids = continued_positions(cache, valid_bt)
    position_3bt = jnp.asarray(position_ids, jnp.int32)
    if position_3bt.ndim == 2:
      position_3bt = jnp.broadcast_to(position_3bt, (3, b, t))
    # One past each row's last real token; rows without a real token keep theirs.
    last_b = jnp.argmax(jnp.arange(t, dtype=jnp.int32) * valid_bt, axis=1)
    last_position_b = jnp.take_along_axis(jnp.max(position_3bt, axis=0), last_b[:, None],
                                          axis=1)[:, 0]
    next_position_b = jnp.where(valid_bt.any(axis=1), last_position_b + 1,
                                cache.next_position_b)
    cos, sin = mrope.mrope_cos_sin(position_3bt, self.cfg.rope_dict, self.cfg.head_dim,
                                   self.cfg.max_position_embeddings)
    x_bte, cache = run_cached_layers(self.layers, self.cfg, x_bte, cos, sin, valid_bt, cache,
                                     next_position_b)
    return self.norm(x_bte), cache


class _VisionLanguageTrunk(nnx.Module):
  """The vision encoder and the text model, shared by both heads.

  Attributes follow the checkpoint names, which are the Hub layout that
  transformers 5.x still writes (`visual.*`, `model.layers.*`, `lm_head`),
  not its in-memory module paths (`model.visual`, `model.language_model`).
  """

  def __init__(self, cfg: Qwen2_5_VLConfig, *, rngs: nnx.Rngs | None = None):
    self.cfg = cfg
    self.visual = VisionTransformer(cfg.vision, rngs=rngs)
    self.model = TextModel(cfg.text, rngs)

  def embed(self, input_ids: jax.Array, pixel_values=None, image_grid_thw=None,
            pixel_values_videos=None, video_grid_thw=None) -> jax.Array:
    """Token embeddings [B, T, E] with image and video placeholders filled in."""
    x_bte = self.model.embed_tokens(input_ids)
    for pixels, grids, token, what in (
        (pixel_values, image_grid_thw, self.cfg.image_token_id, "image"),
        (pixel_values_videos, video_grid_thw, self.cfg.video_token_id, "video")):
      if pixels is None:
        continue
      if grids is None:
        raise ValueError(f"{what} pixels were given without their grid_thw")
      features_me = self.visual(pixels, grids)
      x_bte = scatter_features(x_bte, input_ids == token, features_me, what)
    return x_bte

  def encode_vision_rows(self, pixel_values_bnd: jax.Array, layout_b: VisionLayout) -> jax.Array:
    """Merged vision tokens [B, N / merge², E] of each row's own padded patches.

    The traced counterpart of `pixel_values` with grids: see
    `VisionTransformer.encode_rows` for the padding convention and
    `HostInputs.vision_layout` for one row's layout.
    """
    return self.visual.encode_rows(pixel_values_bnd, layout_b)

  def __call__(self, input_ids=None, attention_mask=None, position_ids=None,
               pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
               video_grid_thw=None, second_per_grid_ts=None, mm_token_type_ids=None,
               inputs_embeds=None, media_features=None, media_index=None, segment_ids=None,
               num_segments: int | None = None) -> ModelOutput:
    """The head's logits (`head`: vocabulary logits, or scores: [B, num_segments,
    num_labels] over packed rows) and the final hidden states (arguments: see
    `hidden_states`)."""
    h_bte = self.hidden_states(input_ids, attention_mask, position_ids, pixel_values,
                               image_grid_thw, pixel_values_videos, video_grid_thw,
                               second_per_grid_ts, mm_token_type_ids, inputs_embeds,
                               media_features, media_index, segment_ids)
    return ModelOutput(logits=self.head(h_bte, input_ids, segment_ids, num_segments),
                       hidden_states=h_bte)

  def hidden_states(self, input_ids=None, attention_mask=None, position_ids=None,
                    pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
                    video_grid_thw=None, second_per_grid_ts=None, mm_token_type_ids=None,
                    inputs_embeds=None, media_features=None, media_index=None,
                    segment_ids=None) -> jax.Array:
    """Final normed hidden states [B, T, E].

    Args:
      input_ids: int [B, T], with `image_token_id` / `video_token_id`
        placeholders (one per merged token) where media go.
      attention_mask: [B, T], 1 for real tokens (left or right padding).
      position_ids: int [3, B, T] M-RoPE ids (or [B, T], used on all three
        axes); computed on the host from `input_ids` and the grids when None.
      pixel_values: [N, C*T*P*P] patches of all images of the batch.
      image_grid_thw: [num_images, 3] (t, h, w) patch grid of each image,
        host values.
      pixel_values_videos: [N', C*T*P*P] patches of all videos.
      video_grid_thw: [num_videos, 3], host values.
      second_per_grid_ts: [num_videos] seconds per temporal patch.
      mm_token_type_ids: [B, T] 0 text / 1 image / 2 video; derived from the
        placeholder ids when None.
      inputs_embeds: [B, T, E] instead of `input_ids` (text only).
      media_features: [B, M, E] each row's media tokens (`encode_vision_rows`),
        instead of pixel values and grids; needs `position_ids`. Traceable.
      media_index: int [B, T], the row of `media_features` each token takes,
        -1 for tokens that keep their embedding.
      segment_ids: [B, T] packed rows: 0 at padding, 1..k for the examples
        packed one after another; attention stays within a segment. Their
        M-RoPE ids come in `position_ids`, each segment's as for the example
        alone (without media, positions restart at each segment).
    """
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("pass exactly one of input_ids or inputs_embeds")
    if (media_features is None) != (media_index is None):
      raise ValueError("media_features and media_index go together")
    if media_features is not None:
      if input_ids is None or position_ids is None:
        raise ValueError("media_features need input_ids and precomputed position_ids")
      if pixel_values is not None or pixel_values_videos is not None:
        raise ValueError("pass media either as pixel values with grids or as media_features")
      x_bte = self.model.embed(input_ids, media_features, media_index)
    elif input_ids is None:
      if pixel_values is not None or pixel_values_videos is not None:
        raise ValueError("media inputs need input_ids (to find the placeholder tokens)")
      x_bte = inputs_embeds
    else:
      x_bte = self.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos,
                         video_grid_thw)
    b, t = x_bte.shape[:2]
    if position_ids is None and segment_ids is not None:
      if image_grid_thw is not None or video_grid_thw is not None:
        raise ValueError("packed rows with media need precomputed position_ids")
      position_ids = segment_positions(segment_ids)
    if position_ids is None:
      if input_ids is None:
        position_ids = np.broadcast_to(np.arange(t, dtype=np.int32), (3, b, t))
      else:
        position_ids, _ = rope_index(self.cfg, input_ids, attention_mask, image_grid_thw,
                                     video_grid_thw, second_per_grid_ts, mm_token_type_ids)
    position_ids = jnp.asarray(position_ids)
    if position_ids.ndim == 2:
      position_ids = jnp.broadcast_to(position_ids, (3, b, t))
    return self.model(x_bte, position_ids, attention_mask, segment_ids)


class Qwen2_5_VLForConditionalGeneration(_VisionLanguageTrunk):
  """Qwen2.5-VL with its vocabulary head."""

  def __init__(self, cfg: Qwen2_5_VLConfig, *, rngs: nnx.Rngs | None = None):
    super().__init__(cfg, rngs=rngs)
    self.lm_head = make_lm_head(cfg.text, cfg.tie_word_embeddings, rngs)

  def head(self, h_bte: jax.Array, input_ids, segment_ids=None,
           num_segments: int | None = None) -> jax.Array:
    """Logits [B, T, V] of every position."""
    del input_ids, segment_ids, num_segments
    return self.lm_logits(h_bte)

  def call_cached(self, cache: KVCache, input_ids=None, attention_mask=None, position_ids=None,
                  media_features=None, media_index=None) -> ModelOutput:
    """Logits [B, T, V] of T new tokens appended to `cache`; the output carries
    the updated cache. Arguments: see `TextModel.call_cached`; media come as
    row-local features (`models.media_inputs`), encoded once beforehand."""
    h_bte, cache = self.model.call_cached(cache, input_ids, attention_mask, position_ids,
                                          media_features=media_features,
                                          media_index=media_index)
    return ModelOutput(logits=self.lm_logits(h_bte), hidden_states=h_bte, cache=cache)

  def lm_logits(self, h_bte: jax.Array) -> jax.Array:
    """Vocabulary logits [B, T, V] of final hidden states."""
    return vocab_logits(self, h_bte)


class Qwen2_5_VLForSequenceClassification(_VisionLanguageTrunk):
  """Qwen2.5-VL with a bias-free score head pooled at the last non-padding
  token; with `num_labels=1` a scalar (multimodal) reward model."""

  def __init__(self, cfg: Qwen2_5_VLConfig, *, rngs: nnx.Rngs | None = None):
    super().__init__(cfg, rngs=rngs)
    self.score = make_score_head(cfg.text, rngs)

  def head(self, h_bte: jax.Array, input_ids, segment_ids=None,
           num_segments: int | None = None) -> jax.Array:
    """Scores [B, num_labels] at each row's last real token (pooling needs
    `input_ids`), or [B, num_segments, num_labels] of packed rows."""
    return pooled_scores(self.score, h_bte, input_ids, self.cfg.pad_token_id, segment_ids,
                         num_segments)
