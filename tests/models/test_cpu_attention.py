"""The fused CPU attention kernel (`models/cpu_attention.py`) against the reference.

Values and the gradients of a random linear functional of the output, under
jit, over the kernel's paths: query tiles split over rows and heads (rows not
a multiple of the tile), masks that are key ranges (causal, padding, a cache
offset) or have holes (packed segments, random), rows without any allowed
key, a mask shared by all rows, head dims from 8 to 128 (padded vectors), and
a batch with enough (row, key/value head) units to run unsplit as well as one
split in blocks of query tiles (partial key and value gradients summed).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_rrm_jax.models import cpu_attention
from omni_rrm_jax.models.attention import causal_mask, dot_product_attention
from omni_rrm_jax.models.cpu_attention import cpu_fused_attention

# (name, B, T, S, H, K, D, start, mask): T queries at cache slots [start,
# start + T) over S key slots.
CASES = [
    ("mha_causal", 2, 20, 20, 3, 3, 16, 0, "causal"),
    ("gqa_left_padding", 3, 24, 24, 4, 2, 16, 0, "left"),  # a row of pads only, too
    ("gqa_right_padding", 2, 19, 19, 6, 2, 32, 0, "right"),
    ("mqa_prefill_at_offset", 2, 9, 40, 4, 1, 32, 20, "cache"),
    ("packed_segments", 2, 33, 33, 2, 1, 8, 0, "segments"),
    ("random_mask_head_dim_128", 1, 10, 37, 2, 1, 128, 0, "random"),
    ("head_dim_80_one_query", 2, 1, 21, 4, 2, 80, 20, "cache"),
    ("shared_mask_many_units", 8, 17, 17, 16, 8, 16, 0, "causal"),  # [1, T, S]; 64 units
]


def _mask(b, t, s, start, kind, rng):
  """Bool [B or 1, T, S]."""
  q_pos, k_pos = start + jnp.arange(t), jnp.arange(s)
  valid = None
  if kind == "left":
    valid = k_pos[None, :] >= jnp.array([0, 7, s])[:b, None]
  elif kind == "right":
    valid = k_pos[None, :] < jnp.array([s - 5, s])[:b, None]
  elif kind == "cache":  # left-padded prompts, slots past the new tokens unwritten
    valid = (k_pos[None, :] >= 3 * jnp.arange(b)[:, None]) & (k_pos[None, :] < start + t)
  if kind == "segments":
    segments = jnp.asarray(np.sort(rng.integers(0, 4, size=(b, t)), axis=1))
    return causal_mask(q_pos, k_pos, None, segment_ids_bt=segments)[:, 0]
  if kind == "random":
    mask = rng.random((b, t, s)) < 0.3
    mask[:, 3] = False  # rows without keys
    return jnp.asarray(mask)
  return causal_mask(q_pos, k_pos, valid)[:, 0]


def _inputs(case, dtype, seed=0):
  _, b, t, s, h, k, d, start, kind = case
  rng = np.random.default_rng(seed)
  arrays = [jnp.asarray(rng.normal(size=shape), dtype)
            for shape in ((b, t, h, d), (b, s, k, d), (b, s, k, d), (b, t, h, d))]
  return (*arrays[:3], _mask(b, t, s, start, kind, rng), arrays[3], d ** -0.5)


def _value_and_grads(attend, q, keys, values, cot):
  def loss(q, keys, values):
    out = attend(q, keys, values)
    return jnp.sum(out.astype(jnp.float32) * cot.astype(jnp.float32)), out
  (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
      q, keys, values)
  return out, grads


def _reference(mask_bts, scale):
  return lambda q, k, v: dot_product_attention(q, k, v, mask_bts[:, None], scale)


def _assert_close(x, ref, tol, name):
  """Agreement to `tol` of the reference's largest magnitude."""
  x, ref = np.asarray(x, np.float32), np.asarray(ref, np.float32)
  assert np.all(np.isfinite(x)), name
  np.testing.assert_allclose(x, ref, atol=tol * max(np.abs(ref).max(), 1e-3), rtol=0,
                             err_msg=name)


def _compare(case, dtype, tol):
  q, keys, values, mask, cot, scale = _inputs(case, dtype)
  out_ref, grads_ref = _value_and_grads(_reference(mask, scale), q, keys, values, cot)
  out, grads = _value_and_grads(
      lambda q, k, v: cpu_fused_attention(q, k, v, mask, scale), q, keys, values, cot)
  assert out.dtype == out_ref.dtype == dtype
  _assert_close(out, out_ref, tol, "out")
  for name, g, g_ref in zip(("dq", "dk", "dv"), grads, grads_ref):
    assert g.dtype == dtype
    _assert_close(g, g_ref, tol, name)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_reference_fp32(case):
  _compare(case, jnp.float32, 1e-5)


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[4]],
                         ids=[CASES[1][0], CASES[3][0], CASES[4][0]])
def test_matches_reference_bf16(case):
  _compare(case, jnp.bfloat16, 3e-2)


def test_rows_without_keys_get_the_mean_of_the_values():
  """The reference's value (softmax over equal logits), and their logits no
  gradient: such a row's dq is zero, its output's gradient spread evenly over
  the values."""
  q, keys, values, mask, cot, scale = _inputs(CASES[1], jnp.float32)
  assert not np.asarray(mask[2]).any()  # the row of pads only
  out = cpu_fused_attention(q, keys, values, mask, scale)  # eagerly, not under jit
  mean = np.repeat(np.asarray(values).mean(axis=1), 2, axis=1)  # [B, H, D], G = 2
  np.testing.assert_allclose(np.asarray(out[2]), np.broadcast_to(mean[2], out[2].shape),
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(out[1, :7]), np.broadcast_to(mean[1], (7, 4, 16)),
                             atol=1e-6)
  _, (dq, _, dv) = _value_and_grads(
      lambda q, k, v: cpu_fused_attention(q, k, v, mask, scale), q, keys, values, cot)
  np.testing.assert_array_equal(np.asarray(dq[2]), 0.0)
  spread = np.asarray(cot[2]).reshape(24, 2, 2, 16).sum(axis=(0, 2)) / 24  # [K, D]
  np.testing.assert_allclose(np.asarray(dv[2]), np.broadcast_to(spread, (24, 2, 16)),
                             atol=1e-5)


def test_through_dot_product_attention_and_vmap():
  """The "cpu_fused" setting of `dot_product_attention` ([B or 1, 1, T, S]
  masks, None for none) and the kernel under vmap."""
  q, keys, values, mask, cot, scale = _inputs(CASES[0], jnp.float32)
  for mask_b1ts in (mask[:, None], None):
    out = dot_product_attention(q, keys, values, mask_b1ts, scale, "cpu_fused")
    ref = dot_product_attention(q, keys, values, mask_b1ts, scale)
    _assert_close(out, ref, 1e-5, "out")
  batched = jax.vmap(lambda q, k, v: cpu_fused_attention(q, k, v, mask, scale))(
      q[None].repeat(2, 0), keys[None].repeat(2, 0), values[None].repeat(2, 0))
  _assert_close(batched[1], cpu_fused_attention(q, keys, values, mask, scale), 1e-6, "vmap")


def test_unsupported_inputs_are_clear_errors(monkeypatch):
  q, keys, values, mask, _, scale = _inputs(CASES[0], jnp.float32)
  with pytest.raises(ValueError, match="head dims up to 128"):
    cpu_fused_attention(jnp.zeros((1, 2, 2, 144)), jnp.zeros((1, 2, 1, 144)),
                        jnp.zeros((1, 2, 1, 144)), jnp.ones((1, 2, 2), bool), 1.0)
  with pytest.raises(ValueError, match=r"must be \[B or 1, T, S\]"):
    cpu_fused_attention(q, keys, values, mask[:, :3], scale)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  with pytest.raises(RuntimeError, match="CPU kernel .* choose another model.attention"):
    cpu_fused_attention(q, keys, values, mask, scale)


def test_build_is_cached_atomic_and_fails_clearly(monkeypatch, tmp_path):
  """The cache folder comes from the environment, the library's name from the
  source; a build leaves only its target; a missing compiler or a failing
  build is one error line naming the other settings."""
  monkeypatch.setenv(cpu_attention.CACHE_ENV, str(tmp_path / "kernels"))
  compiler = cpu_attention._compiler()
  path = cpu_attention.library_path(compiler)
  assert path.parent == tmp_path / "kernels"
  source = tmp_path / "tiny.cc"
  source.write_text('extern "C" int answer() { return 42; }\n')
  monkeypatch.setattr(cpu_attention, "SOURCE", source)
  tiny = cpu_attention.library_path(compiler)
  assert tiny != path and tiny.parent == path.parent
  cpu_attention.build(compiler, tiny)
  assert sorted(p.name for p in tiny.parent.iterdir()) == [tiny.name]
  source.write_text("this is not C++\n")
  with pytest.raises(RuntimeError, match="building the cpu_fused attention kernel failed .*"
                                         "choose another model.attention") as error:
    cpu_attention.build(compiler, cpu_attention.library_path(compiler))
  assert "\n" not in str(error.value)
  assert sorted(p.name for p in tiny.parent.iterdir()) == [tiny.name]
  monkeypatch.setenv("CXX", "no-such-compiler-here")
  with pytest.raises(RuntimeError, match="'no-such-compiler-here' was not found"):
    cpu_attention._compiler()
