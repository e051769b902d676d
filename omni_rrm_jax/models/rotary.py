"""Rotary position embeddings: default, linear, dynamic NTK, llama3 and YaRN.

The inverse frequencies follow the definitions transformers uses for the same
`rope_parameters`, so checkpoints trained with a scaled RoPE load unchanged.
"""

from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")


def _base_inv_freq(theta: float, dim: int) -> np.ndarray:
  exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
  return (1.0 / (np.float32(theta) ** exponents)).astype(np.float32)


def _llama3(inv_freq: np.ndarray, rope: Mapping) -> np.ndarray:
  factor = rope["factor"]
  low, high = rope["low_freq_factor"], rope["high_freq_factor"]
  old_len = rope["original_max_position_embeddings"]
  low_wavelen, high_wavelen = old_len / low, old_len / high
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
  smooth = (old_len / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
  return np.where(medium, smoothed, scaled).astype(np.float32)


def _yarn(rope: Mapping, dim: int, max_position_embeddings: int) -> tuple[np.ndarray, float]:
  base = rope["rope_theta"]
  original_max = rope["original_max_position_embeddings"]
  factor = rope.get("factor") or max_position_embeddings / original_max

  def mscale(scale, m=1.0):
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

  attention_factor = rope.get("attention_factor")
  if attention_factor is None:
    m, m_all = rope.get("mscale"), rope.get("mscale_all_dim")
    attention_factor = mscale(factor, m) / mscale(factor, m_all) if (m and m_all) else mscale(factor)
  beta_fast = rope.get("beta_fast") or 32
  beta_slow = rope.get("beta_slow") or 1

  def correction_dim(rotations):
    return dim * math.log(original_max / (rotations * 2 * math.pi)) / (2 * math.log(base))

  low, high = correction_dim(beta_fast), correction_dim(beta_slow)
  if rope.get("truncate", True):
    low, high = math.floor(low), math.ceil(high)
  low, high = max(low, 0), min(high, dim - 1)
  if low == high:
    high += 0.001  # avoids a zero-width ramp
  ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
  pos_freqs = np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
  extrapolation = 1.0 / pos_freqs
  interpolation = 1.0 / (factor * pos_freqs)
  keep = 1 - ramp  # share of the original (extrapolated) frequency
  inv_freq = interpolation * (1 - keep) + extrapolation * keep
  return inv_freq.astype(np.float32), float(attention_factor)


def static_inv_freq(rope: Mapping, head_dim: int,
                    max_position_embeddings: int) -> tuple[np.ndarray, float]:
  """Inverse frequencies [head_dim // 2] and the cos/sin scale of a RoPE config."""
  rope_type = rope.get("rope_type", "default")
  if rope_type not in SUPPORTED_ROPE_TYPES:
    raise ValueError(
        f"rope_type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
  inv_freq = _base_inv_freq(rope["rope_theta"], head_dim)
  if rope_type == "linear":
    return (inv_freq / np.float32(rope["factor"])).astype(np.float32), 1.0
  if rope_type == "llama3":
    return _llama3(inv_freq, rope), 1.0
  if rope_type == "yarn":
    return _yarn(rope, head_dim, max_position_embeddings)
  return inv_freq, 1.0  # default, and dynamic below its original length


def rope_cos_sin(position_ids_bt: jax.Array, rope: Mapping, head_dim: int,
                 max_position_embeddings: int) -> tuple[jax.Array, jax.Array]:
  """cos and sin tables [B, T, head_dim] in float32 for the given positions."""
  inv_freq, scale = static_inv_freq(rope, head_dim, max_position_embeddings)
  inv_freq = jnp.asarray(inv_freq)
  if rope.get("rope_type") == "dynamic":
    # NTK-aware scaling grows the base once the sequence outgrows the trained
    # length; at or below it the formula gives back the original base.
    seq_len = jnp.maximum(jnp.max(position_ids_bt) + 1, max_position_embeddings).astype(jnp.float32)
    factor = rope["factor"]
    base = rope["rope_theta"] * ((factor * seq_len / max_position_embeddings)
                                 - (factor - 1)) ** (head_dim / (head_dim - 2))
    exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    inv_freq = 1.0 / (base ** exponents)
  freqs_btf = position_ids_bt[..., None].astype(jnp.float32) * inv_freq
  emb_btd = jnp.concatenate([freqs_btf, freqs_btf], axis=-1)
  return jnp.cos(emb_btd) * scale, jnp.sin(emb_btd) * scale


def rotate_half(x: jax.Array) -> jax.Array:
  half = x.shape[-1] // 2
  return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rotary(x_bthd: jax.Array, cos_btd: jax.Array, sin_btd: jax.Array) -> jax.Array:
  """Rotates queries or keys [B, T, H, D] by per-position angles."""
  cos = cos_btd[:, :, None, :].astype(x_bthd.dtype)
  sin = sin_btd[:, :, None, :].astype(x_bthd.dtype)
  return x_bthd * cos + rotate_half(x_bthd) * sin
