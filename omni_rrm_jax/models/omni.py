"""The Qwen2.5-Omni thinker: vision + audio encoders and an M-RoPE text decoder,
with its vocabulary head (`Qwen2_5OmniThinkerForConditionalGeneration`) or a
score head (our `Qwen2_5OmniThinkerForSequenceClassification`).

The towers are the project's own: `VisionTransformer` (with Omni's split
q / k / v projections), `AudioEncoder` and the Qwen2.5-VL `TextModel`.
Audio, image and video placeholder tokens are replaced, in order, by the
encoders' outputs; positions follow the thinker's rules (`omni_rope.py`).

Attributes follow the checkpoint names transformers 5.x writes (`visual.*`,
`audio_tower.*`, `model.layers.*`, `lm_head`), not its in-memory paths
(`model.visual`, `model.language_model`, ...).

Under `jit`: token ids, masks, pixels and log-mel features may be traced.
Host metadata (numpy / Python values; close over them or pass them as
static arguments) are the grids (`image_grid_thw`, `video_grid_thw`), which
fix the vision layout, and, unless `audio_layout` is given, the
`feature_attention_mask`, which fixes the audio layout. With images or
videos, positions need concrete ids and media sizes: compute them with
`rope_index` on the host and pass `position_ids`. Without images and videos,
positions are a cumulative sum of the mask and need no host values.

Fully traced training inputs, as for Qwen2.5-VL (`qwen2_5_vl.py`): each row
carries its own padded patches and audio clip with their padded layouts
(`OmniHostInputs` computes them per example in the data workers),
`encode_vision_rows` / `encode_audio_rows` encode them under `jit`, and the
`media_features` / `media_index` keywords place the tokens, with
precomputed `position_ids`. The compiled shapes then depend only on the
(bucketed) patch, frame and token counts.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_rrm_jax.models import omni_rope
from omni_rrm_jax.models.attention import dot_product_attention, segment_positions
from omni_rrm_jax.models.audio import AudioEncoder
from omni_rrm_jax.models.audio_layout import AudioLayout
from omni_rrm_jax.models.decoder import ModelOutput
from omni_rrm_jax.models.layers import DenseGeneral
from omni_rrm_jax.models.omni_config import ENCODER_PREFIXES, OmniThinkerConfig
from omni_rrm_jax.models.qwen2_5_vl import (TextModel, gather_features, make_lm_head,
                                            make_score_head, pooled_scores, scatter_features,
                                            vocab_logits)
from omni_rrm_jax.models.rotary import rotate_half
from omni_rrm_jax.models.vision import VisionConfig, VisionTransformer
from omni_rrm_jax.models.vision_layout import VisionLayout


class OmniVisionAttention(nnx.Module):
  """Bidirectional vision attention with separate `q`, `k`, `v` projections.

  The math of `vision.VisionAttention`; only the parameters differ, as Omni
  checkpoints store `attn.q`, `attn.k`, `attn.v` instead of a fused `attn.qkv`.
  """

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs | None):
    h, d, e = cfg.num_heads, cfg.head_dim, cfg.hidden_size
    kw = dict(use_bias=True, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
              init_std=cfg.initializer_range, rngs=rngs)
    self.head_dim = d
    self.q = DenseGeneral((e,), (h, d), kernel_axes=("vision_embed", "vision_heads", "head_dim"),
                          **kw)
    self.k = DenseGeneral((e,), (h, d), kernel_axes=("vision_embed", "vision_heads", "head_dim"),
                          **kw)
    self.v = DenseGeneral((e,), (h, d), kernel_axes=("vision_embed", "vision_heads", "head_dim"),
                          **kw)
    self.proj = DenseGeneral((h, d), (e,), kernel_axes=("vision_heads", "head_dim", "vision_embed"),
                             **kw)

  def __call__(self, x_ne: jax.Array, cos_nd: jax.Array, sin_nd: jax.Array,
               mask_nn: jax.Array) -> jax.Array:
    v_nhd = self.v(x_ne)
    cos, sin = cos_nd[:, None, :], sin_nd[:, None, :]

    def rotate(x_nhd):  # in float32 whatever the dtype, as transformers
      x32 = x_nhd.astype(jnp.float32)
      return (x32 * cos + rotate_half(x32) * sin).astype(v_nhd.dtype)

    out_1nhd = dot_product_attention(rotate(self.q(x_ne))[None], rotate(self.k(x_ne))[None],
                                     v_nhd[None], mask_nn[None, None], self.head_dim ** -0.5)
    return self.proj(out_1nhd[0])


class OmniVisionEncoder(VisionTransformer):
  """`Qwen2_5OmniVisionEncoder`: `VisionTransformer` with `OmniVisionAttention` blocks.

  Windows, rotary tables, the merger and the host layouts are inherited.
  """

  def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs | None = None):
    super().__init__(cfg, rngs=rngs)
    # The fused-qkv attention built above is dropped; under `eval_shape` or a
    # jitted init (how checkpoints and sharded models are built) it costs nothing.
    for block in self.blocks:
      block.attn = OmniVisionAttention(cfg, rngs)


def is_encoder_path(path: Sequence[Any]) -> bool:
  """Whether a parameter path (NNX or `jax.tree_util` keys) lies in an encoder."""
  first = path[0] if path else None
  name = getattr(first, "key", getattr(first, "name", first))
  return str(name) in ENCODER_PREFIXES


def encoder_param_labels(params) -> Any:
  """Labels encoder parameters "frozen" and the rest "trainable", in a pytree like `params`.

  For freezing the encoders in the optimizer as well as in the gradients
  (`freeze_encoders` only stops gradients; weight decay would still shrink
  the encoder weights):

      tx = optax.multi_transform(
          {"trainable": tx, "frozen": optax.set_to_zero()},
          encoder_param_labels(params))

  which also keeps no optimizer moments for the frozen parameters.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "frozen" if is_encoder_path(path) else "trainable", params)


def _host(x, name: str) -> np.ndarray:
  if isinstance(x, jax.core.Tracer):
    raise TypeError(f"{name} is traced: the thinker's positions need concrete token ids and "
                    "media sizes; compute position_ids with rope_index outside jit and pass them")
  return np.asarray(x)


def _audio_lengths(feature_attention_mask, audio_layout: AudioLayout | None):
  """Frames per audio clip, on the host, or None when no audio was given."""
  if feature_attention_mask is not None:
    return _host(feature_attention_mask, "feature_attention_mask").sum(-1)
  if audio_layout is not None:
    return _host(audio_layout.feature_lens_a, "audio_layout")
  return None


def _seconds(video_second_per_grid, second_per_grid_ts):
  """Omni's name for seconds per temporal patch, or the Qwen2.5-VL one (the data pipeline's)."""
  if second_per_grid_ts is None:
    return video_second_per_grid
  if video_second_per_grid is not None:
    raise ValueError("pass one of video_second_per_grid or second_per_grid_ts")
  return second_per_grid_ts


def rope_index(cfg: OmniThinkerConfig, input_ids, attention_mask=None, image_grid_thw=None,
               video_grid_thw=None, video_second_per_grid=None, feature_attention_mask=None,
               use_audio_in_video: bool = False, audio_layout: AudioLayout | None = None,
               second_per_grid_ts=None) -> tuple[np.ndarray, np.ndarray]:
  """(position ids [3, B, T], rope deltas [B]) of a batch, on the host.

  Takes the model call's keyword arguments; see `omni_rope.get_rope_index`.
  """
  video_second_per_grid = _seconds(video_second_per_grid, second_per_grid_ts)
  host = lambda x, name: None if x is None else _host(x, name)
  if image_grid_thw is None and video_grid_thw is None:
    # Only the mask matters then, so ids may be traced.
    position, deltas = omni_rope.text_position_ids(attention_mask, *input_ids.shape)
    return np.asarray(position), np.asarray(deltas)
  return omni_rope.get_rope_index(
      _host(input_ids, "input_ids"), host(attention_mask, "attention_mask"),
      image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
      video_second_per_grid=video_second_per_grid,
      audio_feature_lengths=_audio_lengths(feature_attention_mask, audio_layout),
      use_audio_in_video=use_audio_in_video, image_token_id=cfg.image_token_id,
      video_token_id=cfg.video_token_id, audio_token_id=cfg.audio_token_id,
      spatial_merge_size=cfg.vision.spatial_merge_size,
      position_id_per_seconds=cfg.position_id_per_seconds,
      seconds_per_chunk=cfg.seconds_per_chunk)


class _ThinkerTrunk(nnx.Module):
  """The audio and vision encoders and the text model, shared by both heads."""

  def __init__(self, cfg: OmniThinkerConfig, *, rngs: nnx.Rngs | None = None):
    self.cfg = cfg
    self.audio_tower = AudioEncoder(cfg.audio, rngs)
    self.visual = OmniVisionEncoder(cfg.vision, rngs=rngs)
    self.model = TextModel(cfg.text, rngs)

  def _encoded(self, features: jax.Array) -> jax.Array:
    # Stopping here keeps the backward pass out of the encoders altogether.
    return jax.lax.stop_gradient(features) if self.cfg.freeze_encoders else features

  def encode_audio(self, input_features: jax.Array, feature_attention_mask=None,
                   audio_layout: AudioLayout | None = None) -> jax.Array:
    """Audio tokens [P, E] of all clips, in order; P counts real tokens when known."""
    if feature_attention_mask is None and audio_layout is None:
      raise ValueError("input_features need their feature_attention_mask (or an audio_layout)")
    layout = (audio_layout if audio_layout is not None
              else self.audio_tower.layout(feature_attention_mask=feature_attention_mask))
    features_pe = self.audio_tower(input_features, layout)
    if not isinstance(layout.output_lens_a, jax.core.Tracer):
      # Drop the rows a padded layout adds (see build_audio_layout).
      features_pe = features_pe[:int(np.sum(layout.output_lens_a))]
    return self._encoded(features_pe)

  def encode_vision_rows(self, pixel_values_bnd: jax.Array, layout_b: VisionLayout) -> jax.Array:
    """Merged vision tokens [B, N / merge², E] of each row's own padded patches.

    See `VisionTransformer.encode_rows` and `OmniHostInputs.vision_layout`.
    """
    return self._encoded(self.visual.encode_rows(pixel_values_bnd, layout_b))

  def encode_audio_rows(self, input_features_bmf: jax.Array, layout_b: AudioLayout) -> jax.Array:
    """Audio tokens [B, P, E] of each row's own padded clip (at most one per row).

    The traced counterpart of `input_features` with a feature mask: see
    `AudioEncoder.encode_rows` for the padding convention and
    `OmniHostInputs.audio_layout` for one clip's layout.
    """
    return self._encoded(self.audio_tower.encode_rows(input_features_bmf, layout_b))

  def embed(self, input_ids: jax.Array, pixel_values=None, image_grid_thw=None,
            pixel_values_videos=None, video_grid_thw=None, input_features=None,
            feature_attention_mask=None, audio_layout: AudioLayout | None = None) -> jax.Array:
    """Token embeddings [B, T, E] with audio, image and video placeholders filled in."""
    x_bte = self.model.embed_tokens(input_ids)
    if input_features is not None:
      features_pe = self.encode_audio(input_features, feature_attention_mask, audio_layout)
      placeholder_bt = input_ids == self.cfg.audio_token_id
      if not isinstance(placeholder_bt, jax.core.Tracer):
        count = int(np.asarray(placeholder_bt).sum())
        if count != features_pe.shape[0]:
          raise ValueError(f"{count} audio placeholder tokens but {features_pe.shape[0]} "
                           "tokens from the audio encoder")
      x_bte = scatter_features(x_bte, placeholder_bt, features_pe, "audio")
    for pixels, grids, token, what in (
        (pixel_values, image_grid_thw, self.cfg.image_token_id, "image"),
        (pixel_values_videos, video_grid_thw, self.cfg.video_token_id, "video")):
      if pixels is None:
        continue
      if grids is None:
        raise ValueError(f"{what} pixels were given without their grid_thw")
      features_me = self._encoded(self.visual(pixels, grids))
      x_bte = scatter_features(x_bte, input_ids == token, features_me, what)
    return x_bte

  def __call__(self, input_ids=None, attention_mask=None, position_ids=None,
               pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
               video_grid_thw=None, video_second_per_grid=None, input_features=None,
               feature_attention_mask=None, use_audio_in_video: bool = False,
               inputs_embeds=None, audio_layout: AudioLayout | None = None,
               second_per_grid_ts=None, media_features=None, media_index=None,
               segment_ids=None, num_segments: int | None = None) -> ModelOutput:
    """The head's logits (`head`: vocabulary logits, or scores: [B, num_segments,
    num_labels] over packed rows) and the final hidden states (arguments: see
    `hidden_states`)."""
    h_bte = self.hidden_states(
        input_ids, attention_mask, position_ids, pixel_values, image_grid_thw,
        pixel_values_videos, video_grid_thw, video_second_per_grid, input_features,
        feature_attention_mask, use_audio_in_video, inputs_embeds, audio_layout,
        second_per_grid_ts, media_features, media_index, segment_ids)
    return ModelOutput(logits=self.head(h_bte, input_ids, segment_ids, num_segments),
                       hidden_states=h_bte)

  def hidden_states(self, input_ids=None, attention_mask=None, position_ids=None,
                    pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
                    video_grid_thw=None, video_second_per_grid=None, input_features=None,
                    feature_attention_mask=None, use_audio_in_video: bool = False,
                    inputs_embeds=None, audio_layout: AudioLayout | None = None,
                    second_per_grid_ts=None, media_features=None,
                    media_index=None, segment_ids=None) -> jax.Array:
    """Final normed hidden states [B, T, E].

    Args:
      input_ids: int [B, T] with `audio_token_id` / `image_token_id` /
        `video_token_id` placeholders, one per encoder output token.
      attention_mask: [B, T], 1 for real tokens (left or right padding).
      position_ids: int [3, B, T] (or [B, T], used on all three axes);
        computed from the inputs when None (see `rope_index`).
      pixel_values: [N, C*T*P*P] patches of all images of the batch.
      image_grid_thw: [num_images, 3] patch grids, host values.
      pixel_values_videos: [N', C*T*P*P] patches of all videos.
      video_grid_thw: [num_videos, 3], host values.
      video_second_per_grid: [num_videos] seconds per temporal patch (1 when
        None); `second_per_grid_ts` (the Qwen2.5-VL name) is an alias.
      input_features: [num_clips, mel, frames] log-mel features, one clip per
        row, clips in placeholder order.
      feature_attention_mask: [num_clips, frames], 1 at a clip's frames; host
        values unless `audio_layout` is given.
      use_audio_in_video: each video's placeholders are interleaved with the
        next audio clip's (affects positions only).
      inputs_embeds: [B, T, E] instead of `input_ids` (text only).
      audio_layout: a prebuilt `AudioLayout` (`self.audio_tower.layout`),
        possibly padded, so the audio path can be traced.
      second_per_grid_ts: alias of `video_second_per_grid`.
      media_features: [B, M, E] each row's media tokens (`encode_vision_rows`
        and `encode_audio_rows`, concatenated along M), instead of pixel
        values, features and grids; needs `position_ids`. Traceable.
      media_index: int [B, T], the row of `media_features` each token takes,
        -1 for tokens that keep their embedding.
      segment_ids: [B, T] packed rows: 0 at padding, 1..k for the examples
        packed one after another; attention stays within a segment. Their
        M-RoPE ids come in `position_ids`, each segment's as for the example
        alone (without media, positions restart at each segment).
    """
    video_second_per_grid = _seconds(video_second_per_grid, second_per_grid_ts)
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("pass exactly one of input_ids or inputs_embeds")
    if (media_features is None) != (media_index is None):
      raise ValueError("media_features and media_index go together")
    flat_media = any(x is not None for x in (pixel_values, pixel_values_videos, input_features))
    if media_features is not None:
      if input_ids is None or position_ids is None:
        raise ValueError("media_features need input_ids and precomputed position_ids")
      if flat_media:
        raise ValueError("pass media either as pixel values / features with their grids and "
                         "masks or as media_features")
      x_bte = gather_features(self.model.embed_tokens(input_ids), media_features, media_index)
    elif input_ids is None:
      if flat_media:
        raise ValueError("media inputs need input_ids (to find the placeholder tokens)")
      x_bte = inputs_embeds
    else:
      x_bte = self.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos,
                         video_grid_thw, input_features, feature_attention_mask, audio_layout)
    b, t = x_bte.shape[:2]
    if position_ids is None and segment_ids is not None:
      if image_grid_thw is not None or video_grid_thw is not None:
        raise ValueError("packed rows with media need precomputed position_ids")
      position_ids = segment_positions(segment_ids)
    if position_ids is None:
      if input_ids is None or (image_grid_thw is None and video_grid_thw is None):
        position_ids, _ = omni_rope.text_position_ids(attention_mask, b, t)
      else:
        position_ids, _ = rope_index(
            self.cfg, input_ids, attention_mask, image_grid_thw, video_grid_thw,
            video_second_per_grid, feature_attention_mask, use_audio_in_video, audio_layout)
    position_ids = jnp.asarray(position_ids)
    if position_ids.ndim == 2:
      position_ids = jnp.broadcast_to(position_ids, (3, b, t))
    return self.model(x_bte, position_ids, attention_mask, segment_ids)


class Qwen2_5OmniThinkerForConditionalGeneration(_ThinkerTrunk):
  """The Qwen2.5-Omni thinker with its vocabulary head."""

  def __init__(self, cfg: OmniThinkerConfig, *, rngs: nnx.Rngs | None = None):
    super().__init__(cfg, rngs=rngs)
    self.lm_head = make_lm_head(cfg.text, cfg.tie_word_embeddings, rngs)

  def head(self, h_bte: jax.Array, input_ids, segment_ids=None,
           num_segments: int | None = None) -> jax.Array:
    """Logits [B, T, V] of every position."""
    del input_ids, segment_ids, num_segments
    return self.lm_logits(h_bte)

  def lm_logits(self, h_bte: jax.Array) -> jax.Array:
    """Vocabulary logits [B, T, V] of final hidden states."""
    return vocab_logits(self, h_bte)


class Qwen2_5OmniThinkerForSequenceClassification(_ThinkerTrunk):
  """The thinker with a bias-free score head pooled at the last non-padding
  token; with `num_labels=1` a scalar (audio-visual) reward model.

  transformers has no such class: its export is our config (`architectures`
  names it) plus safetensors whose trunk tensors load into transformers'
  `Qwen2_5OmniThinkerForConditionalGeneration` (which ignores `score.weight`).
  """

  def __init__(self, cfg: OmniThinkerConfig, *, rngs: nnx.Rngs | None = None):
    super().__init__(cfg, rngs=rngs)
    self.score = make_score_head(cfg.text, rngs)

  def head(self, h_bte: jax.Array, input_ids, segment_ids=None,
           num_segments: int | None = None) -> jax.Array:
    """Scores [B, num_labels] at each row's last real token (pooling needs
    `input_ids`), or [B, num_segments, num_labels] of packed rows."""
    return pooled_scores(self.score, h_bte, input_ids, self.cfg.pad_token_id, segment_ids,
                         num_segments)
