"""The Qwen2.5-Omni thinker's audio encoder (Whisper-style, windowed attention).

Log-mel frames are cut into windows of `2 * n_window` frames (see
`audio_layout`); each window goes through two 1-D convolutions (the second with
stride 2), gets sinusoidal positions counted from the window's start, and runs
through pre-LayerNorm transformer layers whose attention stays inside the
window. Pairs of tokens of a clip are then averaged, normed and projected to
the text model's hidden size, one output row per `<|AUDIO|>` placeholder.

Windows are the batch axis of the computation ([C, N, E]), so attention inside
a window is an ordinary padded-key mask: the block-diagonal mask over the
concatenated tokens that transformers builds from `cu_seqlens`, without the
quadratic cost in the total token count.

Parameter names are the Hugging Face ones (`conv1.weight`,
`layers.0.self_attn.q_proj.weight`, `ln_post.bias`, ...). Parameters named
`weight` are stored in the Hugging Face layout (norms, the special-token table
and the convolution kernels, [out, in, width]), so the generic mapping in
`hf_weights` passes them through unchanged; linear layers are `DenseGeneral`
kernels as everywhere else.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_rrm_jax.models.attention import dot_product_attention
from omni_rrm_jax.models.audio_layout import AudioLayout, build_audio_layout
from omni_rrm_jax.models.config import resolve_dtype
from omni_rrm_jax.models.layers import Axes, DenseGeneral, param
from omni_rrm_jax.sharding.rules import constrain


@dataclasses.dataclass(frozen=True)
class AudioEncoderConfig:
  """The audio encoder's hyper-parameters, named as in transformers.

  `output_dim` is the text model's hidden size. `dtype` is the compute dtype,
  `param_dtype` the storage dtype.
  """
  d_model: int
  encoder_layers: int
  encoder_attention_heads: int
  encoder_ffn_dim: int
  output_dim: int
  num_mel_bins: int = 128
  n_window: int = 100
  max_source_positions: int = 1500
  activation_function: str = "gelu"
  layer_norm_eps: float = 1e-5
  initializer_range: float = 0.02
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False

  @property
  def head_dim(self) -> int:
    return self.d_model // self.encoder_attention_heads

  def __post_init__(self):
    if self.d_model % self.encoder_attention_heads:
      raise ValueError(f"d_model={self.d_model} is not a multiple of "
                       f"encoder_attention_heads={self.encoder_attention_heads}")
    if self.d_model % 2:
      raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
    if self.n_window > self.max_source_positions:
      raise ValueError(f"n_window={self.n_window} exceeds max_source_positions="
                       f"{self.max_source_positions}")
    if self.activation_function != "gelu":
      raise ValueError(f"activation_function {self.activation_function!r} is not supported "
                       "(gelu only)")


# The fields transformers' audio config holds (the rest are ours).
_HF_FIELDS = ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
              "output_dim", "num_mel_bins", "n_window", "max_source_positions",
              "activation_function", "initializer_range")


def audio_config_from_hf(hf, **overrides) -> AudioEncoderConfig:
  """Builds an `AudioEncoderConfig` from a transformers audio (or thinker) config.

  Args:
    hf: a `Qwen2_5OmniAudioEncoderConfig`, or any config with `audio_config`.
    **overrides: e.g. `dtype="bfloat16"`, `remat=True`.
  """
  hf = getattr(hf, "audio_config", hf)
  kwargs = {name: getattr(hf, name) for name in _HF_FIELDS if getattr(hf, name, None) is not None}
  kwargs.update(overrides)
  for key in ("dtype", "param_dtype"):
    if key in kwargs:
      kwargs[key] = resolve_dtype(kwargs[key])
  return AudioEncoderConfig(**kwargs)


def sinusoid_positions(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
  """Whisper's fixed position table [length, channels]: sines, then cosines."""
  half = channels // 2
  inv_timescale = np.exp(-np.log(max_timescale) / (half - 1) * np.arange(half, dtype=np.float32))
  angle_lh = np.arange(length, dtype=np.float32)[:, None] * inv_timescale[None, :]
  return np.concatenate([np.sin(angle_lh), np.cos(angle_lh)], axis=1).astype(np.float32)


class LayerNorm(nnx.Module):
  """LayerNorm with scale and bias, computed in float32 (`weight`, `bias` as in torch)."""

  def __init__(self, size: int, *, eps: float, axes: Axes = ("audio_norm",),
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs | None = None):
    self.eps = eps
    self.weight = param(rngs, nnx.initializers.ones, (size,), param_dtype, axes)
    self.bias = param(rngs, nnx.initializers.zeros, (size,), param_dtype, axes)

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    y = y * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return y.astype(x.dtype)


class Conv1d(nnx.Module):
  """1-D convolution of channels-last [B, W, in] inputs, zero-padded on both sides.

  The kernel keeps torch's [out, in, width] layout (`weight`), which
  `lax.conv_general_dilated` reads directly as "OIW".
  """

  def __init__(self, in_channels: int, out_channels: int, width: int, *, stride: int,
               kernel_axes: Axes, bias_axes: Axes, dtype: Any, param_dtype: Any,
               init_std: float, rngs: nnx.Rngs | None):
    self.stride, self.dtype = stride, dtype
    self.padding = (width - 1) // 2
    self.weight = param(rngs, nnx.initializers.normal(init_std), (out_channels, in_channels, width),
                        param_dtype, kernel_axes)
    self.bias = param(rngs, nnx.initializers.zeros, (out_channels,), param_dtype, bias_axes)

  def __call__(self, x_bwi: jax.Array) -> jax.Array:
    y_bwo = jax.lax.conv_general_dilated(
        x_bwi.astype(self.dtype), self.weight[...].astype(self.dtype),
        window_strides=(self.stride,), padding=[(self.padding, self.padding)],
        dimension_numbers=("NWC", "OIW", "NWC"))
    return y_bwo + self.bias[...].astype(self.dtype)


class Table(nnx.Module):
  """A bare `weight` matrix (an `nn.Embedding` the forward pass never reads)."""

  def __init__(self, rows: int, cols: int, *, axes: Axes, param_dtype: Any, init_std: float,
               rngs: nnx.Rngs | None):
    self.weight = param(rngs, nnx.initializers.normal(init_std), (rows, cols), param_dtype, axes)


class AudioAttention(nnx.Module):
  """Bidirectional multi-head attention within each window; k_proj has no bias."""

  def __init__(self, cfg: AudioEncoderConfig, rngs: nnx.Rngs | None):
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, init_std=cfg.initializer_range,
              rngs=rngs)
    heads = (cfg.encoder_attention_heads, cfg.head_dim)
    in_axes = ("audio_embed", "audio_heads", "audio_head_dim")
    self.head_dim = cfg.head_dim
    self.q_proj = DenseGeneral((cfg.d_model,), heads, use_bias=True, kernel_axes=in_axes, **kw)
    self.k_proj = DenseGeneral((cfg.d_model,), heads, use_bias=False, kernel_axes=in_axes, **kw)
    self.v_proj = DenseGeneral((cfg.d_model,), heads, use_bias=True, kernel_axes=in_axes, **kw)
    self.out_proj = DenseGeneral(heads, (cfg.d_model,), use_bias=True,
                                 kernel_axes=("audio_heads", "audio_head_dim", "audio_embed"), **kw)

  def __call__(self, x_cne: jax.Array, token_valid_cn: jax.Array) -> jax.Array:
    q_cnhd = constrain(self.q_proj(x_cne), ("batch", "length", "audio_heads", "audio_head_dim"))
    k_cnhd = constrain(self.k_proj(x_cne), ("batch", "length", "audio_heads", "audio_head_dim"))
    v_cnhd = self.v_proj(x_cne)
    mask_c11n = token_valid_cn[:, None, None, :]
    out_cnhd = dot_product_attention(q_cnhd, k_cnhd, v_cnhd, mask_c11n, self.head_dim ** -0.5)
    return self.out_proj(out_cnhd)


class AudioEncoderLayer(nnx.Module):
  """Pre-LayerNorm block: x + attn(ln(x)), then x + fc2(gelu(fc1(ln(x))))."""

  def __init__(self, cfg: AudioEncoderConfig, rngs: nnx.Rngs | None):
    kw = dict(use_bias=True, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
              init_std=cfg.initializer_range, rngs=rngs)
    norm_kw = dict(eps=cfg.layer_norm_eps, param_dtype=cfg.param_dtype, rngs=rngs)
    self.self_attn = AudioAttention(cfg, rngs)
    self.self_attn_layer_norm = LayerNorm(cfg.d_model, **norm_kw)
    self.fc1 = DenseGeneral((cfg.d_model,), (cfg.encoder_ffn_dim,),
                            kernel_axes=("audio_embed", "audio_mlp"), **kw)
    self.fc2 = DenseGeneral((cfg.encoder_ffn_dim,), (cfg.d_model,),
                            kernel_axes=("audio_mlp", "audio_embed"), **kw)
    self.final_layer_norm = LayerNorm(cfg.d_model, **norm_kw)

  def __call__(self, x_cne: jax.Array, token_valid_cn: jax.Array) -> jax.Array:
    x_cne = x_cne + self.self_attn(self.self_attn_layer_norm(x_cne), token_valid_cn)
    h_cnm = jax.nn.gelu(self.fc1(self.final_layer_norm(x_cne)), approximate=False)
    h_cnm = constrain(h_cnm, ("batch", "length", "audio_mlp"))
    x_cne = x_cne + self.fc2(h_cnm)
    return constrain(x_cne, ("batch", "length", "audio_embed"))


class AudioEncoder(nnx.Module):
  """Log-mel features -> one `output_dim` embedding per `<|AUDIO|>` placeholder.

  In a thinker this module is the `audio_tower` attribute, which gives the
  checkpoint names `audio_tower.conv1.weight`, and so on.
  """

  def __init__(self, cfg: AudioEncoderConfig, rngs: nnx.Rngs | None = None):
    self.cfg = cfg
    conv_kw = dict(width=3, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                   init_std=cfg.initializer_range, bias_axes=("audio_embed",), rngs=rngs)
    self.conv1 = Conv1d(cfg.num_mel_bins, cfg.d_model, stride=1,
                        kernel_axes=("audio_embed", "audio_mel", "audio_conv_width"), **conv_kw)
    self.conv2 = Conv1d(cfg.d_model, cfg.d_model, stride=2,
                        kernel_axes=("audio_embed", "audio_conv_in", "audio_conv_width"), **conv_kw)
    # Learned audio begin/end embeddings that transformers' forward pass never
    # uses either; kept so checkpoints load and export without loss.
    self.audio_bos_eos_token = Table(2, cfg.output_dim, axes=("audio_special", "embed"),
                                     param_dtype=cfg.param_dtype,
                                     init_std=cfg.initializer_range, rngs=rngs)
    self.layers = nnx.List([AudioEncoderLayer(cfg, rngs) for _ in range(cfg.encoder_layers)])
    self.ln_post = LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, param_dtype=cfg.param_dtype,
                             rngs=rngs)
    self.proj = DenseGeneral((cfg.d_model,), (cfg.output_dim,), use_bias=True,
                             kernel_axes=("audio_embed", "embed"), dtype=cfg.dtype,
                             param_dtype=cfg.param_dtype, init_std=cfg.initializer_range,
                             rngs=rngs)

  def __call__(self, input_features: jax.Array, layout: AudioLayout | None = None, *,
               feature_attention_mask=None, feature_lens=None) -> jax.Array:
    """Encodes a batch of clips.

    Args:
      input_features: [B, mel, T] log-mel features with one clip per row (the
        processor's output), or [mel, L] clips concatenated along time.
      layout: the window layout from `build_audio_layout`, built on the host.
        Required under `jit`; its index arrays may be traced.
      feature_attention_mask: [B, T], host array; builds the layout when none
        is given (outside `jit` only).
      feature_lens: [A] frames per clip of a [mel, L] input; likewise.

    Returns:
      [P, output_dim]: the clips' tokens, concatenated clip after clip (the
      order of the `<|AUDIO|>` placeholders), plus any rows padded up to the
      layout's `num_outputs` (see `layout.output_valid_p`).
    """
    if layout is None:
      layout = self.layout(feature_attention_mask=feature_attention_mask,
                           feature_lens=feature_lens)
    x_cne = self.embed_windows(input_features, layout)
    x_cne = self.encode_windows(x_cne, layout.token_valid_cn)
    return self.pool_and_project(x_cne, layout)

  def layout(self, *, feature_attention_mask=None, feature_lens=None, **padding) -> AudioLayout:
    """`build_audio_layout` with this encoder's `n_window`; host arrays only."""
    try:
      return build_audio_layout(self.cfg.n_window, feature_attention_mask=feature_attention_mask,
                                feature_lens=feature_lens, **padding)
    except jax.errors.TracerArrayConversionError:
      raise ValueError("under jit, build the AudioLayout on the host (AudioEncoder.layout or "
                       "build_audio_layout) and pass it as `layout`") from None

  def embed_windows(self, input_features: jax.Array, layout: AudioLayout) -> jax.Array:
    """Gathers each window's frames and runs the convolutions: [C, N, E]."""
    cfg = self.cfg
    if input_features.ndim == 3:
      frames_fm = jnp.swapaxes(input_features, 1, 2).reshape(-1, input_features.shape[1])
    else:
      frames_fm = input_features.T
    if frames_fm.shape[1] != cfg.num_mel_bins:
      raise ValueError(f"expected {cfg.num_mel_bins} mel bins, got input_features of shape "
                       f"{input_features.shape}")
    if layout.frame_index_cw.shape[1] != 2 * cfg.n_window:
      raise ValueError(f"layout windows hold {layout.frame_index_cw.shape[1]} frames, this "
                       f"encoder needs 2 * n_window = {2 * cfg.n_window}")
    return self.embed_frames(jnp.take(frames_fm, layout.frame_index_cw, axis=0),
                             layout.frame_valid_cw)

  def embed_frames(self, x_cwm: jax.Array, frame_valid_cw: jax.Array) -> jax.Array:
    """The convolutions and positions of windows already gathered [C, W, mel]: [C, N, E]."""
    cfg = self.cfg
    frame_valid_cw1 = frame_valid_cw[..., None].astype(cfg.dtype)
    x_cwm = x_cwm.astype(cfg.dtype) * frame_valid_cw1
    # Zeroing the padded frames after conv1 makes each window's conv2 see the
    # same zero padding as a convolution of that window alone.
    x_cwe = jax.nn.gelu(self.conv1(x_cwm), approximate=False) * frame_valid_cw1
    x_cne = jax.nn.gelu(self.conv2(x_cwe), approximate=False)
    # Positions restart at 0 in every window.
    x_cne = x_cne + jnp.asarray(sinusoid_positions(x_cne.shape[1], cfg.d_model), cfg.dtype)
    return constrain(x_cne, ("batch", "length", "audio_embed"))

  def encode_windows(self, x_cne: jax.Array, token_valid_cn: jax.Array) -> jax.Array:
    """The transformer layers; a token attends to the real tokens of its window."""
    def block(layer, x):
      return layer(x, token_valid_cn)

    if self.cfg.remat:
      block = nnx.remat(block)
    for layer in self.layers:
      x_cne = block(layer, x_cne)
    return x_cne

  def pool_and_project(self, x_cne: jax.Array, layout: AudioLayout) -> jax.Array:
    """Averages token pairs within each clip, then ln_post and proj: [P, output_dim]."""
    tokens_te = x_cne.reshape(-1, x_cne.shape[-1])
    pooled_pe = jnp.take(tokens_te, layout.pool_index_p2, axis=0).mean(axis=1)
    return self.proj(self.ln_post(pooled_pe))

  def encode_rows(self, input_features_bmf: jax.Array, layout_b: AudioLayout) -> jax.Array:
    """Each row's own padded clip -> its tokens [B, P, output_dim].

    The traced, row-aligned counterpart of `__call__`: row b's clip is
    `input_features_bmf[b]` ([mel, F], frames from 0, zeros after it) and
    `layout_b` holds one clip's layout per row, each field with a leading row
    axis and padded to C windows and P outputs (`frame_index_cw` [B, C, W],
    `frame_valid_cw` [B, C, W], `token_valid_cn` [B, C, N], `pool_index_p2`
    [B, P, 2], indices counting the row's own frames and tokens; the other
    fields are not read). Padded windows are fully masked; padded outputs
    mean nothing. The gathers stay within each row (batched over B), so a
    batch-sharded input stays sharded; the transformer layers then run over
    all B * C windows at once.
    """
    b, mel, f = input_features_bmf.shape
    c, w = layout_b.frame_index_cw.shape[1:]
    n = layout_b.token_valid_cn.shape[2]
    p = layout_b.pool_index_p2.shape[1]
    if f == 0 or c == 0 or p == 0:  # no audio in this batch
      return jnp.zeros((b, p, self.cfg.output_dim), self.cfg.dtype)
    if mel != self.cfg.num_mel_bins:
      raise ValueError(f"expected {self.cfg.num_mel_bins} mel bins, got input_features of shape "
                       f"{input_features_bmf.shape}")
    if w != 2 * self.cfg.n_window:
      raise ValueError(f"layout windows hold {w} frames, this encoder needs 2 * n_window = "
                       f"{2 * self.cfg.n_window}")
    frames_bfm = jnp.swapaxes(input_features_bmf, 1, 2)
    index_bk1 = jnp.asarray(layout_b.frame_index_cw, jnp.int32).reshape(b, c * w, 1)
    x_cwm = jnp.take_along_axis(frames_bfm, index_bk1, axis=1).reshape(b * c, w, mel)
    x_cne = self.embed_frames(x_cwm, jnp.asarray(layout_b.frame_valid_cw).reshape(b * c, w))
    x_cne = self.encode_windows(x_cne, jnp.asarray(layout_b.token_valid_cn).reshape(b * c, n))
    tokens_bke = x_cne.reshape(b, c * n, -1)
    pool_bk1 = jnp.asarray(layout_b.pool_index_p2, jnp.int32).reshape(b, p * 2, 1)
    pooled_bpe = jnp.take_along_axis(tokens_bke, pool_bk1, axis=1).reshape(b, p, 2, -1).mean(2)
    return self.proj(self.ln_post(pooled_bpe))
