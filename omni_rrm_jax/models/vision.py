"""The Qwen2.5-VL vision encoder: patches -> windowed ViT -> merged tokens.

Images and videos arrive as one flat sequence of patches (`pixel_values`
[N, C * temporal_patch * patch * patch], an image repeated to the temporal
patch size), ordered as transformers' processor orders them: item by item,
frame by frame, and within a frame in blocks of `merge x merge` neighbouring
patches that the merger later fuses into one token.

Attention never crosses items or frames: most blocks attend within square
windows of the merged grid, the `fullatt_block_indexes` blocks within a whole
frame. transformers expresses this with `cu_seqlens` over a sequence reordered
so windows are contiguous; here the same groups are id vectors, and a block's
mask is "same id". The reordering itself does not change the result (masked
attention is permutation-equivariant); we keep it so windows stay contiguous
for a segment-aware attention kernel.

Grid sizes are host metadata: `vision_layout.py` turns them into index
arrays with numpy, whose shapes depend only on the number of patches N (the
static length of `pixel_values`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_rrm_jax.models.attention import dot_product_attention
from omni_rrm_jax.models.config import resolve_dtype
from omni_rrm_jax.models.layers import DenseGeneral, RMSNorm, param
from omni_rrm_jax.models.rotary import rotate_half
from omni_rrm_jax.models.vision_layout import VisionLayout, as_grids, vision_layout

NORM_EPS = 1e-6  # transformers hard-codes it for every vision norm


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """The vision tower's sizes, with the Hugging Face `vision_config` names."""
  depth: int
  hidden_size: int
  intermediate_size: int
  num_heads: int
  out_hidden_size: int
  in_channels: int = 3
  patch_size: int = 14
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  window_size: int = 112
  fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
  tokens_per_second: float = 4
  rope_theta: float = 10000.0
  hidden_act: str = "silu"
  initializer_range: float = 0.02
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

  @property
  def merge_unit(self) -> int:
    return self.spatial_merge_size ** 2

  def __post_init__(self):
    if self.hidden_act not in ("silu", "swish"):
      raise ValueError(f"vision hidden_act {self.hidden_act!r} is not supported (silu only)")
    if self.hidden_size % self.num_heads or self.head_dim % 4:
      raise ValueError(f"vision hidden_size {self.hidden_size} / num_heads {self.num_heads} "
                       "must give a head size divisible by 4 (2-D rotary)")
    if self.window_size // self.spatial_merge_size // self.patch_size < 1:
      raise ValueError(f"window_size {self.window_size} is smaller than one merged patch")


def vision_config_from_hf(hf, **overrides) -> VisionConfig:
  """A `VisionConfig` from a transformers `Qwen2_5_VLVisionConfig` (or the Omni one)."""
  rope = dict(getattr(hf, "rope_parameters", None) or {})
  for key in ("dtype", "param_dtype"):
    if key in overrides:
      overrides[key] = resolve_dtype(overrides[key])
  return VisionConfig(
      depth=hf.depth, hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size,
      num_heads=hf.num_heads, out_hidden_size=hf.out_hidden_size, in_channels=hf.in_channels,
      patch_size=hf.patch_size, temporal_patch_size=hf.temporal_patch_size,
      spatial_merge_size=hf.spatial_merge_size, window_size=hf.window_size,
      fullatt_block_indexes=tuple(hf.fullatt_block_indexes),
      tokens_per_second=hf.tokens_per_second, rope_theta=rope.get("rope_theta", 10000.0),
      hidden_act=hf.hidden_act, initializer_range=hf.initializer_range, **overrides)


def vision_cos_sin(position_n2: jax.Array, cfg: VisionConfig) -> tuple[jax.Array, jax.Array]:
  """2-D rotary tables [N, head_dim]: a quarter of the frequencies per axis, repeated."""
  quarter = cfg.head_dim // 2
  inv_freq = 1.0 / (np.float32(cfg.rope_theta)
                    ** (np.arange(0, quarter, 2, dtype=np.float32) / np.float32(quarter)))
  freqs_n2f = jnp.asarray(position_n2)[..., None].astype(jnp.float32) * inv_freq
  freqs_nf = freqs_n2f.reshape(freqs_n2f.shape[0], -1)  # row freqs, then column freqs
  emb_nd = jnp.concatenate([freqs_nf, freqs_nf], axis=-1)
  return jnp.cos(emb_nd), jnp.sin(emb_nd)


# ----------------------------------------------------------------------------
# Modules. Attribute names are the transformers names (see hf_weights.py).


class PatchConv3d(nnx.Module):
  """A Conv3d whose stride equals its kernel: a linear map of each flattened patch.

  The kernel keeps the torch layout [embed, C, T, P, P] (no `in_ndim`), so it
  loads and saves as is; flattened, it is the [embed, C*T*P*P] matrix.
  """

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs | None):
    self.dtype = cfg.dtype
    shape = (cfg.hidden_size, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size,
             cfg.patch_size)
    self.weight = param(rngs, nnx.initializers.normal(cfg.initializer_range), shape,
                        cfg.param_dtype, ("vision_embed", None, None, None, None))

  def __call__(self, patches_np: jax.Array) -> jax.Array:
    w_ep = self.weight[...].astype(self.dtype).reshape(self.weight.shape[0], -1)
    return jnp.einsum("np,ep->ne", patches_np.astype(self.dtype), w_ep)


class PatchEmbed(nnx.Module):

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs | None):
    self.proj = PatchConv3d(cfg, rngs)

  def __call__(self, patches_np: jax.Array) -> jax.Array:
    return self.proj(patches_np)


def _dense(cfg: VisionConfig, in_shape, out_shape, axes, rngs):
  return DenseGeneral(in_shape, out_shape, kernel_axes=axes, use_bias=True, dtype=cfg.dtype,
                      param_dtype=cfg.param_dtype, init_std=cfg.initializer_range, rngs=rngs)


class VisionAttention(nnx.Module):
  """Bidirectional multi-head attention with a fused qkv projection and 2-D rotary."""

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs | None):
    h, d, e = cfg.num_heads, cfg.head_dim, cfg.hidden_size
    self.head_dim = d
    self.qkv = _dense(cfg, (e,), (3, h, d), ("vision_embed", None, "vision_heads", "head_dim"),
                      rngs)
    self.proj = _dense(cfg, (h, d), (e,), ("vision_heads", "head_dim", "vision_embed"), rngs)

  def __call__(self, x_ne: jax.Array, cos_nd: jax.Array, sin_nd: jax.Array,
               mask_nn: jax.Array) -> jax.Array:
    qkv_n3hd = self.qkv(x_ne)
    q, k, v = (qkv_n3hd[:, i] for i in range(3))
    # transformers rotates vision queries and keys in float32 whatever the dtype.
    cos, sin = cos_nd[:, None, :], sin_nd[:, None, :]
    q = (q.astype(jnp.float32) * cos + rotate_half(q.astype(jnp.float32)) * sin).astype(v.dtype)
    k = (k.astype(jnp.float32) * cos + rotate_half(k.astype(jnp.float32)) * sin).astype(v.dtype)
    out_1nhd = dot_product_attention(q[None], k[None], v[None], mask_nn[None, None],
                                     self.head_dim ** -0.5)
    return self.proj(out_1nhd[0])


class VisionMLP(nnx.Module):
  """SwiGLU with biases: down(silu(gate(x)) * up(x))."""

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs | None):
    e, i = cfg.hidden_size, cfg.intermediate_size
    self.gate_proj = _dense(cfg, (e,), (i,), ("vision_embed", "vision_mlp"), rngs)
    self.up_proj = _dense(cfg, (e,), (i,), ("vision_embed", "vision_mlp"), rngs)
    self.down_proj = _dense(cfg, (i,), (e,), ("vision_mlp", "vision_embed"), rngs)

  def __call__(self, x_ne: jax.Array) -> jax.Array:
    return self.down_proj(jax.nn.silu(self.gate_proj(x_ne)) * self.up_proj(x_ne))


class VisionBlock(nnx.Module):
  """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs | None):
    norm = dict(eps=NORM_EPS, param_dtype=cfg.param_dtype, rngs=rngs)
    self.norm1 = RMSNorm(cfg.hidden_size, **norm)
    self.norm2 = RMSNorm(cfg.hidden_size, **norm)
    self.attn = VisionAttention(cfg, rngs)
    self.mlp = VisionMLP(cfg, rngs)

  def __call__(self, x_ne, cos_nd, sin_nd, mask_nn):
    x_ne = x_ne + self.attn(self.norm1(x_ne), cos_nd, sin_nd, mask_nn)
    return x_ne + self.mlp(self.norm2(x_ne))


class PatchMerger(nnx.Module):
  """Norm, then each merge x merge block of patches -> one token of the text width.

  `mlp` mirrors torch's `Sequential(Linear, GELU, Linear)`: slot 1 holds the
  parameter-free GELU, so the linears keep their checkpoint names `mlp.0` and
  `mlp.2`.
  """

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs | None):
    unit, e = cfg.merge_unit, cfg.hidden_size
    self.ln_q = RMSNorm(e, eps=NORM_EPS, param_dtype=cfg.param_dtype, rngs=rngs)
    self.mlp = nnx.List([
        _dense(cfg, (unit, e), (unit * e,), (None, "vision_embed", "vision_mlp"), rngs),
        None,
        _dense(cfg, (unit * e,), (cfg.out_hidden_size,), ("vision_mlp", "embed"), rngs),
    ])
    self.unit = unit

  def __call__(self, x_ne: jax.Array) -> jax.Array:
    x_mue = self.ln_q(x_ne).reshape(-1, self.unit, x_ne.shape[-1])
    return self.mlp[2](jax.nn.gelu(self.mlp[0](x_mue), approximate=False))


class VisionTransformer(nnx.Module):
  """`Qwen2_5_VisionTransformerPretrainedModel`.

  Patches [N, C*T*P*P] -> merged tokens [N / merge², out_hidden_size].
  """

  def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs | None = None):
    self.cfg = cfg
    self.patch_embed = PatchEmbed(cfg, rngs)
    self.blocks = nnx.List([VisionBlock(cfg, rngs) for _ in range(cfg.depth)])
    self.merger = PatchMerger(cfg, rngs)

  def layout(self, grid_thw) -> VisionLayout:
    """The `VisionLayout` of host grids [num_items, 3] for this encoder's config."""
    cfg = self.cfg
    return vision_layout(grid_thw, cfg.spatial_merge_size, cfg.window_size, cfg.patch_size)

  def __call__(self, pixel_values: jax.Array, grid_thw) -> jax.Array:
    """Merged tokens of every item, concatenated in input order.

    Args:
      pixel_values: [N, C * temporal_patch * patch * patch] patches of all
        items, in the processor's order.
      grid_thw: [num_items, 3] patch grids (host values; see `vision_layout`).
    """
    layout = self.layout(grid_thw)
    if layout.num_patches != pixel_values.shape[0]:
      raise ValueError(f"grid_thw {as_grids(grid_thw).tolist()} has {layout.num_patches} "
                       f"patches but pixel_values has {pixel_values.shape[0]}")
    return self.encode(pixel_values, layout)

  def encode(self, pixel_values: jax.Array, layout: VisionLayout) -> jax.Array:
    """As `__call__`, from a prebuilt (numpy or traced) layout."""
    if pixel_values.shape[-1] != self.cfg.patch_dim:
      raise ValueError(f"pixel_values rows have {pixel_values.shape[-1]} values, expected "
                       f"C*T*P*P = {self.cfg.patch_dim}")
    x_ne = self.patch_embed(jnp.take(pixel_values, jnp.asarray(layout.perm_n), axis=0))
    cos, sin = vision_cos_sin(layout.position_n2, self.cfg)
    full = set(self.cfg.fullatt_block_indexes)
    masks = {}
    if any(i in full for i in range(self.cfg.depth)):
      frame_n = jnp.asarray(layout.frame_n)
      masks[True] = frame_n[:, None] == frame_n[None, :]
    if any(i not in full for i in range(self.cfg.depth)):
      window_n = jnp.asarray(layout.window_n)
      masks[False] = window_n[:, None] == window_n[None, :]

    def block(blk, x, mask):
      return blk(x, cos, sin, mask)

    if self.cfg.remat:
      block = nnx.remat(block)
    for i, blk in enumerate(self.blocks):
      x_ne = block(blk, x_ne, masks[i in full])
    tokens_me = self.merger(x_ne)
    return jnp.take(tokens_me, jnp.asarray(layout.unperm_m), axis=0)

  def encode_rows(self, pixel_values_bnd: jax.Array, layout_b: VisionLayout) -> jax.Array:
    """`encode` of each row's own patches: [B, N, C*T*P*P] -> [B, N / merge², out].

    Every field of `layout_b` has a leading row axis, and the arrays may be
    traced, so a new set of grid sizes with the same N reuses the compiled
    program. Patches padded onto a row need layout entries that keep them
    apart: identity `perm_n` / `unperm_m` and a frame and window id of their
    own (e.g. -1); their merged tokens are returned but mean nothing. Rows are
    mapped (`vmap`), so attention costs B * N² rather than (B * N)².
    """
    b, n = pixel_values_bnd.shape[:2]
    if n == 0:  # a batch without media: nothing to encode (and merging 0 rows cannot reshape)
      return jnp.zeros((b, 0, self.cfg.out_hidden_size), self.cfg.dtype)
    # nnx.vmap (not jax.vmap over a bound method) lifts the module's state, which
    # nnx.remat inside `encode` needs.
    encode = nnx.vmap(lambda module, pixels, layout: module.encode(pixels, layout),
                      in_axes=(None, 0, 0))
    return encode(self, pixel_values_bnd, layout_b)
