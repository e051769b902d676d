"""Blockwise (flash) attention as Pallas kernels, forward and backward.

The attention of `models/attention.py`, computed one [block_q, block_k] tile
of logits at a time with an online softmax, so the float32 logits
[B, heads, T, S] are never stored: the forward keeps the output and one
log-sum-exp per query, the backward recomputes each tile's probabilities.

The mask is the model's own boolean [B or 1, T, S] (causal, padded keys,
sliding window, whatever `causal_mask` builds), read tile by tile as int8; it
is shared by all heads, so it costs 1 byte per (query, key) against the 4
bytes per head of the logits. A tile whose mask is all False is skipped (the
upper triangle of a causal mask). Grouped-query attention reads each key/value
head once per query head of its group, without repeating it in memory.

JAX's own TPU kernels were not used: `pallas.ops.tpu.flash_attention` takes
neither grouped heads, nor a sliding window, nor a causal offset (a cached
prefill's queries start at slot `end`), nor a mask other than equal segment
ids, and it has no interpret mode to test it off TPU; splash attention's masks
are static numpy arrays, which a traced cache offset or padding is not.

On TPU the kernels compile with Mosaic; elsewhere they run in Pallas'
interpret mode (slow, for tests: the same kernel code, run as JAX ops).

Fully masked query rows (left padding) come out as zeros here;
`models/attention.py` replaces them with what the reference computes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

# Stands in for a masked logit in the running maximum: finite, so that
# exp(m_old - m_new) never sees inf - inf; masked probabilities are zeroed
# explicitly, so its value never reaches a sum.
_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


def _dot(a, b, contract_a: int, contract_b: int):
  """a @ b contracting the given axes of two 2-D tiles, accumulated in float32."""
  return jax.lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((), ())),
                             preferred_element_type=jnp.float32)


def _fwd_kernel(q_ref, k_ref, v_ref, mask_ref, o_ref, lse_ref, *, scale, block_k):
  """One block of queries of one head against all key blocks.

  Refs: q [bq, D], k and v [S, D] (this head's key/value head), mask [bq, S];
  out o [bq, D], lse [bq, 1].
  """
  q = q_ref[...]
  bq, d = q.shape
  num_k_blocks = k_ref.shape[0] // block_k

  def body(j, carry):
    keys = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
    allowed = mask_ref[:, keys] != 0

    def update(carry):
      m, l, acc = carry
      v = v_ref[keys, :]
      s = _dot(q, k_ref[keys, :], 1, 1) * scale
      s = jnp.where(allowed, s, _MASKED)
      m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
      p = jnp.where(allowed, jnp.exp(s - m_new), 0.0)
      alpha = jnp.exp(m - m_new)
      l = alpha * l + jnp.sum(p, axis=1, keepdims=True)
      acc = alpha * acc + _dot(p.astype(v.dtype), v, 1, 0)
      return m_new, l, acc

    return jax.lax.cond(jnp.any(allowed), update, lambda c: c, carry)

  init = (jnp.full((bq, 1), _MASKED, jnp.float32), jnp.zeros((bq, 1), jnp.float32),
          jnp.zeros((bq, d), jnp.float32))
  m, l, acc = jax.lax.fori_loop(0, num_k_blocks, body, init)
  empty = l == 0.0  # no allowed key at all
  l_safe = jnp.where(empty, 1.0, l)
  o_ref[...] = (acc / l_safe).astype(o_ref.dtype)
  lse_ref[...] = jnp.where(empty, 0.0, m + jnp.log(l_safe))


def _dq_kernel(q_ref, k_ref, v_ref, mask_ref, do_ref, lse_ref, delta_ref, dq_ref, *, scale,
               block_k):
  """dq of one block of queries of one head: refs as `_fwd_kernel`, plus dO
  [bq, D], lse and delta [bq, 1]; out dq [bq, D]."""
  q, do = q_ref[...], do_ref[...]
  lse, delta = lse_ref[...], delta_ref[...]
  num_k_blocks = k_ref.shape[0] // block_k

  def body(j, dq):
    keys = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
    allowed = mask_ref[:, keys] != 0

    def update(dq):
      k = k_ref[keys, :]
      s = _dot(q, k, 1, 1) * scale
      p = jnp.where(allowed, jnp.exp(s - lse), 0.0)
      dp = _dot(do, v_ref[keys, :], 1, 1)
      ds = p * (dp - delta)
      return dq + _dot(ds.astype(k.dtype), k, 1, 0) * scale

    return jax.lax.cond(jnp.any(allowed), update, lambda x: x, dq)

  dq = jax.lax.fori_loop(0, num_k_blocks, body, jnp.zeros(q.shape, jnp.float32))
  dq_ref[...] = dq.astype(dq_ref.dtype)


def _dkv_kernel(q_ref, k_ref, v_ref, mask_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *,
                scale, block_q):
  """dk and dv of one block of keys of one key/value head, summed over the
  query heads of its group and all query blocks.

  Refs: q and dO [G, T, D] (the group's query heads), k and v [bk, D],
  mask [T, bk], lse and delta [G, T, 1]; out dk and dv [bk, D].
  """
  k, v = k_ref[...], v_ref[...]
  groups, t = q_ref.shape[0], q_ref.shape[1]
  num_q_blocks = t // block_q

  def body(i, carry):
    g, qb = i // num_q_blocks, i % num_q_blocks
    rows = pl.ds(pl.multiple_of(qb * block_q, block_q), block_q)
    allowed = mask_ref[rows, :] != 0

    def update(carry):
      dk, dv = carry
      q, do = q_ref[g, rows, :], do_ref[g, rows, :]
      s = _dot(q, k, 1, 1) * scale
      p = jnp.where(allowed, jnp.exp(s - lse_ref[g, rows, :]), 0.0)
      dv = dv + _dot(p.astype(do.dtype), do, 0, 0)
      dp = _dot(do, v, 1, 1)
      ds = p * (dp - delta_ref[g, rows, :])
      dk = dk + _dot(ds.astype(q.dtype), q, 0, 0) * scale
      return dk, dv

    return jax.lax.cond(jnp.any(allowed), update, lambda c: c, carry)

  zeros = jnp.zeros(k.shape, jnp.float32)
  dk, dv = jax.lax.fori_loop(0, groups * num_q_blocks, body, (zeros, zeros))
  dk_ref[...] = dk.astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _mask_index(mask_batch: int):
  """Block index of the mask's batch axis: its own row, or the one shared row."""
  return (lambda b: b) if mask_batch > 1 else (lambda b: 0)


def _forward(q_bhtd, k_bksd, v_bksd, mask_bts, scale, block_q, block_k, interpret):
  b, h, t, d = q_bhtd.shape
  kv, s = k_bksd.shape[1], k_bksd.shape[2]
  groups = h // kv
  mb = _mask_index(mask_bts.shape[0])
  o, lse = pl.pallas_call(
      functools.partial(_fwd_kernel, scale=scale, block_k=block_k),
      grid=(b, h, t // block_q),
      in_specs=[
          pl.BlockSpec((None, None, block_q, d), lambda bi, hi, qi: (bi, hi, qi, 0)),
          pl.BlockSpec((None, None, s, d), lambda bi, hi, qi: (bi, hi // groups, 0, 0)),
          pl.BlockSpec((None, None, s, d), lambda bi, hi, qi: (bi, hi // groups, 0, 0)),
          pl.BlockSpec((None, block_q, s), lambda bi, hi, qi: (mb(bi), qi, 0)),
      ],
      out_specs=[
          pl.BlockSpec((None, None, block_q, d), lambda bi, hi, qi: (bi, hi, qi, 0)),
          pl.BlockSpec((None, None, block_q, 1), lambda bi, hi, qi: (bi, hi, qi, 0)),
      ],
      out_shape=[jax.ShapeDtypeStruct(q_bhtd.shape, q_bhtd.dtype),
                 jax.ShapeDtypeStruct((b, h, t, 1), jnp.float32)],
      interpret=interpret,
  )(q_bhtd, k_bksd, v_bksd, mask_bts)
  return o, lse


def _backward(q_bhtd, k_bksd, v_bksd, mask_bts, o_bhtd, lse_bht1, do_bhtd, scale, block_q,
              block_k, interpret):
  b, h, t, d = q_bhtd.shape
  kv, s = k_bksd.shape[1], k_bksd.shape[2]
  groups = h // kv
  mb = _mask_index(mask_bts.shape[0])
  delta_bht1 = jnp.sum(do_bhtd.astype(jnp.float32) * o_bhtd.astype(jnp.float32), axis=-1,
                       keepdims=True)
  row = lambda bi, hi, qi: (bi, hi, qi, 0)  # noqa: E731
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, scale=scale, block_k=block_k),
      grid=(b, h, t // block_q),
      in_specs=[
          pl.BlockSpec((None, None, block_q, d), row),
          pl.BlockSpec((None, None, s, d), lambda bi, hi, qi: (bi, hi // groups, 0, 0)),
          pl.BlockSpec((None, None, s, d), lambda bi, hi, qi: (bi, hi // groups, 0, 0)),
          pl.BlockSpec((None, block_q, s), lambda bi, hi, qi: (mb(bi), qi, 0)),
          pl.BlockSpec((None, None, block_q, d), row),
          pl.BlockSpec((None, None, block_q, 1), row),
          pl.BlockSpec((None, None, block_q, 1), row),
      ],
      out_specs=pl.BlockSpec((None, None, block_q, d), row),
      out_shape=jax.ShapeDtypeStruct(q_bhtd.shape, q_bhtd.dtype),
      interpret=interpret,
  )(q_bhtd, k_bksd, v_bksd, mask_bts, do_bhtd, lse_bht1, delta_bht1)
  group = lambda bi, ki, kb: (bi, ki, 0, 0)  # noqa: E731
  keys = lambda bi, ki, kb: (bi, ki, kb, 0)  # noqa: E731
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, scale=scale, block_q=block_q),
      grid=(b, kv, s // block_k),
      in_specs=[
          pl.BlockSpec((None, groups, t, d), group),
          pl.BlockSpec((None, None, block_k, d), keys),
          pl.BlockSpec((None, None, block_k, d), keys),
          pl.BlockSpec((None, t, block_k), lambda bi, ki, kb: (mb(bi), 0, kb)),
          pl.BlockSpec((None, groups, t, d), group),
          pl.BlockSpec((None, groups, t, 1), group),
          pl.BlockSpec((None, groups, t, 1), group),
      ],
      out_specs=[pl.BlockSpec((None, None, block_k, d), keys),
                 pl.BlockSpec((None, None, block_k, d), keys)],
      out_shape=[jax.ShapeDtypeStruct(k_bksd.shape, k_bksd.dtype),
                 jax.ShapeDtypeStruct(v_bksd.shape, v_bksd.dtype)],
      interpret=interpret,
  )(q_bhtd, k_bksd, v_bksd, mask_bts, do_bhtd, lse_bht1, delta_bht1)
  return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _flash(q_bhtd, k_bksd, v_bksd, mask_bts, scale, block_q, block_k, interpret):
  return _forward(q_bhtd, k_bksd, v_bksd, mask_bts, scale, block_q, block_k, interpret)[0]


def _flash_fwd(q_bhtd, k_bksd, v_bksd, mask_bts, scale, block_q, block_k, interpret):
  o, lse = _forward(q_bhtd, k_bksd, v_bksd, mask_bts, scale, block_q, block_k, interpret)
  return o, (q_bhtd, k_bksd, v_bksd, mask_bts, o, lse)


def _flash_bwd(scale, block_q, block_k, interpret, residuals, do_bhtd):
  q, k, v, mask, o, lse = residuals
  dq, dk, dv = _backward(q, k, v, mask, o, lse, do_bhtd, scale, block_q, block_k, interpret)
  return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def _pad_to(x: jax.Array, axis: int, multiple: int) -> jax.Array:
  extra = -x.shape[axis] % multiple
  if not extra:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, extra)
  return jnp.pad(x, widths)


def flash_attention(q_bthd: jax.Array, k_bskd: jax.Array, v_bskd: jax.Array,
                    mask_bts: jax.Array, scale: float, *, block_q: int = 128,
                    block_k: int = 128, interpret: bool | None = None) -> jax.Array:
  """Masked softmax attention with grouped key/value heads, blockwise.

  Args:
    q_bthd: queries [B, T, H, D].
    k_bskd: keys [B, S, K, D], H a multiple of K (query head h reads key
      head h // (H / K), as `dot_product_attention`).
    v_bskd: values [B, S, K, D].
    mask_bts: bool [B or 1, T, S], True where query t may attend to key s.
    scale: the logits' scale.
    block_q: queries per tile (T is cut to min(block_q, T) and padded up to a
      multiple of it).
    block_k: keys per tile (likewise for S).
    interpret: run in Pallas' interpret mode; by default everywhere but TPU.

  Returns:
    [B, T, H, D] in the dtype of `q_bthd`; rows without any allowed key are 0.
  """
  if interpret is None:
    interpret = jax.default_backend() != "tpu"
  t, s = q_bthd.shape[1], k_bskd.shape[1]
  block_q, block_k = min(block_q, t), min(block_k, s)
  q = _pad_to(q_bthd.transpose(0, 2, 1, 3), 2, block_q)
  k = _pad_to(k_bskd.transpose(0, 2, 1, 3), 2, block_k)
  v = _pad_to(v_bskd.transpose(0, 2, 1, 3), 2, block_k)
  mask = _pad_to(_pad_to(mask_bts.astype(jnp.int8), 1, block_q), 2, block_k)
  o_bhtd = _flash(q, k, v, mask, float(scale), block_q, block_k, bool(interpret))
  return o_bhtd[:, :, :t].transpose(0, 2, 1, 3)
