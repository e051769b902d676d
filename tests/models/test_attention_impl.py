"""The attention implementations agree with the reference: values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_rrm_jax.models.attention import causal_mask, dot_product_attention
from omni_rrm_jax.models.blockwise_attention import blockwise_attention, slice_shape
from omni_rrm_jax.models.flash_attention import flash_attention
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, activation_sharding

# (name, B, T, S, H, K, start, key_valid, sliding_window): T queries at cache
# slots [start, start + T) over S key slots.
CASES = [
    ("mha_causal", 2, 16, 16, 4, 4, 0, None, None),
    ("gqa_left_padding", 2, 16, 16, 4, 2, 0, "left", None),  # fully masked query rows
    ("gqa_right_padding_window", 2, 16, 16, 6, 2, 0, "right", 5),
    ("mqa_prefill_at_offset", 2, 5, 24, 4, 1, 7, "cache", None),
    ("gqa_decode_one_token", 3, 1, 19, 4, 2, 11, "cache", None),
    ("gqa_decode_window", 2, 1, 16, 4, 2, 12, "cache", 4),
]


def _inputs(b, t, s, h, k, start, key_valid, window, dtype, d=8, seed=0):
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.normal(size=(b, t, h, d)), dtype)
  keys = jnp.asarray(rng.normal(size=(b, s, k, d)), dtype)
  values = jnp.asarray(rng.normal(size=(b, s, k, d)), dtype)
  valid_bs = None
  if key_valid == "left":  # row 0 starts with 5 pads: its first 5 queries see nothing
    valid_bs = jnp.arange(s)[None, :] >= jnp.array([5, 0])[:, None]
  elif key_valid == "right":
    valid_bs = jnp.arange(s)[None, :] < jnp.array([s - 3, s])[:, None]
  elif key_valid == "cache":  # left-padded prompts, slots after the new tokens unwritten
    valid_bs = ((jnp.arange(s)[None, :] >= jnp.arange(b)[:, None] * 2)
                & (jnp.arange(s)[None, :] < start + t))
  mask = causal_mask(start + jnp.arange(t), jnp.arange(s), valid_bs, window)
  cot = jnp.asarray(rng.normal(size=(b, t, h, d)), dtype)
  return q, keys, values, mask, cot


def _value_and_grads(attend, q, keys, values, cot):
  def loss(q, keys, values):
    out = attend(q, keys, values)
    return jnp.sum(out.astype(jnp.float32) * cot.astype(jnp.float32)), out
  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
  (_, out), grads = step(q, keys, values)
  return out, grads


def _compare(case, dtype, attend_impl, atol):
  _, b, t, s, h, k, start, key_valid, window = case
  q, keys, values, mask, cot = _inputs(b, t, s, h, k, start, key_valid, window, dtype)
  scale = q.shape[-1] ** -0.5
  ref = lambda q, k, v: dot_product_attention(q, k, v, mask, scale)  # noqa: E731
  out_ref, grads_ref = _value_and_grads(ref, q, keys, values, cot)
  out, grads = _value_and_grads(lambda q, k, v: attend_impl(q, k, v, mask, scale),
                                q, keys, values, cot)
  assert out.dtype == out_ref.dtype
  assert np.all(np.isfinite(np.asarray(out, np.float32)))
  np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(out_ref, np.float32),
                             atol=atol, rtol=0)
  for name, g, g_ref in zip("qkv", grads, grads_ref):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(g_ref, np.float32),
                               atol=atol, rtol=0, err_msg=f"d{name}")


def _xla(q, k, v, mask, scale):
  return dot_product_attention(q, k, v, mask, scale, "xla")


def _flash_small_blocks(q, k, v, mask, scale):
  # Tiles of 4 x 8: several query and key blocks, skipped blocks, padded ends.
  out = flash_attention(q, k, v, mask[:, 0], scale, block_q=4, block_k=8, interpret=True)
  empty = ~jnp.any(mask[:, 0], axis=-1)[:, :, None, None]
  # Rows without keys are zeros from the kernel; the mean of the values is
  # what `dot_product_attention` puts there (checked through it below).
  mean = jnp.repeat(jnp.mean(v, axis=1), q.shape[2] // v.shape[2], axis=1)[:, None]
  return jnp.where(empty, mean.astype(out.dtype), out)


def test_flash_through_dot_product_attention_keeps_empty_rows():
  """The "flash" setting (default tiles, interpret mode on CPU) including the
  reference's value for query rows without any key."""
  case = CASES[1]
  _compare(case, jnp.float32,
           lambda q, k, v, mask, scale: dot_product_attention(q, k, v, mask, scale, "flash"),
           atol=1e-5)


def test_flash_kernel_leaves_empty_rows_zero():
  _, b, t, s, h, k, start, key_valid, window = CASES[1]
  q, keys, values, mask, _ = _inputs(b, t, s, h, k, start, key_valid, window, jnp.float32)
  out = flash_attention(q, keys, values, mask[:, 0], 0.3, block_q=4, block_k=8, interpret=True)
  np.testing.assert_array_equal(np.asarray(out[0, :5]), 0.0)
  assert np.all(np.abs(np.asarray(out[0, 5:])) > 0)


def _blockwise(q, k, v, mask, scale):
  return dot_product_attention(q, k, v, mask, scale, "blockwise")


def _cpu_fused(q, k, v, mask, scale):
  return dot_product_attention(q, k, v, mask, scale, "cpu_fused")


def _blockwise_small_blocks(q, k, v, mask, scale):
  # Query blocks of 2 or 1, one row a slice: several slices per row and head,
  # their key and value gradients summed over the blocks.
  t = q.shape[1]
  return blockwise_attention(q, k, v, mask[:, 0], scale, block_q=2 if t % 2 == 0 else 1,
                             rows=1)


def _blockwise_row_pairs(q, k, v, mask, scale):
  # Two rows a slice (each case's batch is even or 3): a mask of one row or of
  # each row, sliced with its rows.
  b = q.shape[0]
  return blockwise_attention(q, k, v, mask[:, 0], scale, rows=2 if b % 2 == 0 else 3)


# Each implementation against the reference: the flash kernel in small tiles
# (interpret mode), the blockwise map with its default slices, with several
# query blocks a row and head, and with several rows a slice, and the fused CPU
# kernel (its own paths: `test_cpu_attention.py`).
IMPLEMENTATIONS = {"xla": _xla, "flash": _flash_small_blocks, "blockwise": _blockwise,
                   "blockwise_query_blocks": _blockwise_small_blocks,
                   "blockwise_row_pairs": _blockwise_row_pairs, "cpu_fused": _cpu_fused}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_reference_fp32(case, impl):
  _compare(case, jnp.float32, IMPLEMENTATIONS[impl], atol=1e-5)


# The fused CPU kernel computes in float32 and rounds once, where the
# reference rounds its bf16 products: they can differ by one bf16 step at the
# gradients' magnitude (0.031 between 4 and 8), the kernel being the closer of
# the two to the float32 result.
@pytest.mark.parametrize(("impl", "case", "atol"), [
    ("xla", CASES[1], 2e-2), ("xla", CASES[2], 2e-2), ("flash", CASES[2], 3e-2),
    ("blockwise", CASES[2], 3e-2), ("cpu_fused", CASES[1], 3e-2), ("cpu_fused", CASES[2], 4e-2)],
    ids=["xla_left_padding", "xla_window", "flash", "blockwise", "cpu_fused_left_padding",
         "cpu_fused_window"])
def test_matches_reference_bf16(impl, case, atol):
  _compare(case, jnp.bfloat16, IMPLEMENTATIONS[impl], atol=atol)


def test_blockwise_keeps_the_references_empty_rows():
  """A query row without keys (left padding) gets the mean of the values, and
  the other rows agree with the reference to float rounding."""
  _, b, t, s, h, k, start, key_valid, window = CASES[1]
  q, keys, values, mask, _ = _inputs(b, t, s, h, k, start, key_valid, window, jnp.float32)
  out = dot_product_attention(q, keys, values, mask, 0.3, "blockwise")
  ref = dot_product_attention(q, keys, values, mask, 0.3)
  np.testing.assert_allclose(np.asarray(out[0, :5]),
                             np.repeat(np.asarray(values).mean(1), h // k, axis=1)[0][None]
                             .repeat(5, 0), atol=1e-6)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6, rtol=0)


def test_blockwise_slices_fit_the_budget():
  mib = 1 << 20
  assert slice_shape(8, 256, 256, 2, mib) == (2, 256)  # [2, 512, 256] float32: 1 MiB
  assert slice_shape(2, 4096, 4096, 3, mib) == (1, 16)  # 3 * 16 * 4096 * 4 bytes = 768 KiB
  assert slice_shape(2, 4096, 4096, 3) == (1, 256)  # 12 MiB of the default 16
  assert slice_shape(32, 80, 80, 2, mib) == (16, 80)
  assert slice_shape(3, 12, 10**6, 1, mib) == (1, 1)
  q, keys, values, mask, _ = _inputs(2, 6, 6, 2, 2, 0, None, None, jnp.float32)
  with pytest.raises(ValueError, match="must divide"):
    blockwise_attention(q, keys, values, mask[:, 0], 1.0, block_q=4)
  with pytest.raises(ValueError, match="must divide"):
    blockwise_attention(q, keys, values, mask[:, 0], 1.0, rows=3)


def test_unknown_implementation_is_an_error():
  q, keys, values, mask, _ = _inputs(1, 4, 4, 2, 2, 0, None, None, jnp.float32)
  with pytest.raises(ValueError, match="unknown attention implementation 'fast'"):
    dot_product_attention(q, keys, values, mask, 1.0, "fast")


@pytest.mark.parametrize("implementation", ["flash", "blockwise", "cpu_fused"])
def test_under_a_mesh_runs_per_shard_and_matches_reference(implementation):
  """Under an active mesh the kernels (or the blockwise map) run in shard_map
  over rows and heads."""
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  b, t, s, h, k = 4, 8, 8, 4, 2
  q, keys, values, _, cot = _inputs(b, t, s, h, k, 0, None, None, jnp.float32)
  valid_bs = jnp.arange(s)[None, :] >= jnp.array([5, 0, 2, 0])[:, None]
  mask = causal_mask(jnp.arange(t), jnp.arange(s), valid_bs)
  scale = q.shape[-1] ** -0.5
  flash = lambda q, k, v: dot_product_attention(q, k, v, mask, scale,  # noqa: E731
                                                implementation)
  with activation_sharding(mesh, DEFAULT_RULES):
    assert "shard_map" in str(jax.make_jaxpr(flash)(q, keys, values))
    out, grads = _value_and_grads(flash, q, keys, values, cot)
  out_ref, grads_ref = _value_and_grads(
      lambda q, k, v: dot_product_attention(q, k, v, mask, scale), q, keys, values, cot)
  np.testing.assert_allclose(np.asarray(out), np.asarray(out_ref), atol=1e-5, rtol=0)
  for g, g_ref in zip(grads, grads_ref):
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), atol=1e-5, rtol=0)
