"""Attention one slice (rows, key/value head, query block) at a time, in XLA ops.

The reference (`models/attention.py`) builds the float32 logits of the whole
batch, [B, K, G·T, S], and keeps them (and the probabilities) for the
backward pass: at 4,096 tokens that is gigabytes a layer, and every pass of
the softmax and of its gradient (mask, max, exp, sum, normalise; the
probabilities' and logits' gradients) streams the whole tensor through
memory once more.

Here a `lax.map` runs the whole softmax of one slice, the G query heads of
one key/value head over one block of queries, for a few rows at once
([R, G·bq, S] logits, at most `SLICE_BYTES`), before the next slice starts,
and the backward pass recomputes each slice's probabilities from the row
maxima and sums the forward kept (`custom_vjp`), so the logits of the whole
batch are never stored: the memory of the forward is the output and two
floats per query row, and the backward adds each slice's key and value
gradients into one accumulator in place.

The arithmetic is the reference's (float32 logits, the mask as the smallest
float, the probabilities normalised and cast to the values' dtype before
their product), so values agree to float rounding; a query row without any
allowed key gets the mean of the values, as the reference's softmax over
equal logits gives it. Pure XLA: it runs unchanged on CPU, GPU and TPU,
where the Pallas kernel (`models/flash_attention.py`) is the faster choice.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# The logits of one slice, [R, G·bq, S] float32, at most this many bytes. On
# XLA:CPU larger slices ran faster than cache-sized ones (fewer loop trips, and
# each op large enough to be split over the cores): the 25M RM step at 4,096
# tokens 24.1 s with 1 MiB slices, 17.5 s with 4 MiB, 15.0 s with 16 MiB; the
# tiny one 35 ms at 1 MiB, 30 ms from 4 MiB on. A slice's temporaries are a few
# times this, whatever the sequence length.
SLICE_BYTES = 16 << 20
_MASKED = jnp.finfo(jnp.float32).min


def slice_shape(b: int, t: int, s: int, group: int,
                budget: int = SLICE_BYTES) -> tuple[int, int]:
  """(rows R, query block bq) of a slice: the largest block of queries (a
  divisor of `t`, `t` itself when it fits) whose [group·bq, s] float32 logits
  fit `budget`, then as many rows (a divisor of `b`) as still fit; (1, 1) at
  worst."""
  def largest_divisor(n: int, fits) -> int:
    return max([d for d in range(1, n + 1) if n % d == 0 and fits(d)] or [1])
  block = largest_divisor(t, lambda d: group * d * s * 4 <= budget)
  rows = largest_divisor(b, lambda r: r * group * block * s * 4 <= budget)
  return rows, block


def _einsum(spec: str, a, b):
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _slices(x_bthd, k: int, rows: int, block: int):
  """[B, T, H, D] as slices [N, R, G·bq, D], N = (B / R)·K·(T / bq) in the
  order (row group, key/value head, query block), each slice's rows (g, t)."""
  b, t, h, d = x_bthd.shape
  g, nq, nr = h // k, t // block, b // rows
  x = x_bthd.reshape(nr, rows, nq, block, k, g, d).transpose(0, 4, 2, 1, 5, 3, 6)
  return x.reshape(nr * k * nq, rows, g * block, d)


def _unslice(x_nrmd, b: int, t: int, k: int, g: int, rows: int, block: int):
  """[N, R, G·bq, D] slices back to [B, T, H, D]."""
  d = x_nrmd.shape[-1]
  x = x_nrmd.reshape(b // rows, k, t // block, rows, g, block, d).transpose(0, 3, 2, 5, 1, 4, 6)
  return x.reshape(b, t, k * g, d)


def _indices(b: int, k: int, t: int, rows: int, block: int):
  """Each slice's first row, key/value head and first query."""
  nq = t // block
  index = jnp.arange((b // rows) * k * nq, dtype=jnp.int32)
  return (index // (k * nq)) * rows, (index // nq) % k, (index % nq) * block


def _slice_inputs(k_bskd, v_bskd, mask_bts, row, head, query, rows: int, block: int):
  """Keys and values [R, S, D] of a slice and its mask [R or 1, bq, S]."""
  def take(x_bskd):
    x = jax.lax.dynamic_slice_in_dim(x_bskd, row, rows, 0)
    return jax.lax.dynamic_index_in_dim(x, head, 2, keepdims=False)
  mask = mask_bts
  if mask.shape[0] != 1:
    mask = jax.lax.dynamic_slice_in_dim(mask, row, rows, 0)
  return take(k_bskd), take(v_bskd), jax.lax.dynamic_slice_in_dim(mask, query, block, 1)


def _logits(q_rmd, k_rsd, mask_rbs, scale, g: int):
  """Masked float32 logits [R, G·bq, S] of one slice and where they are allowed."""
  logits = _einsum("rmd,rsd->rms", q_rmd, k_rsd) * scale
  r, bq, s = mask_rbs.shape
  allowed = jnp.broadcast_to(mask_rbs[:, None], (r, g, bq, s)).reshape(r, g * bq, s)
  return jnp.where(allowed, logits, _MASKED), allowed


def _forward(q_bthd, k_bskd, v_bskd, mask_bts, scale, rows, block):
  b, t, h, d = q_bthd.shape
  k = k_bskd.shape[2]
  g = h // k

  def one(args):
    q_rmd, row, head, query = args
    k_rsd, v_rsd, mask_rbs = _slice_inputs(k_bskd, v_bskd, mask_bts, row, head, query,
                                           rows, block)
    logits, _ = _logits(q_rmd, k_rsd, mask_rbs, scale, g)
    max_rm = jnp.max(logits, axis=-1, keepdims=True)
    exp = jnp.exp(logits - max_rm)
    sum_rm = jnp.sum(exp, axis=-1, keepdims=True)
    probs = (exp / sum_rm).astype(v_rsd.dtype)
    out_rmd = _einsum("rms,rsd->rmd", probs, v_rsd).astype(v_rsd.dtype)
    return out_rmd, max_rm[..., 0], sum_rm[..., 0]

  q_n = _slices(q_bthd, k, rows, block)
  out_n, max_n, sum_n = jax.lax.map(one, (q_n,) + _indices(b, k, t, rows, block))
  return _unslice(out_n, b, t, k, g, rows, block), (q_n, out_n, max_n, sum_n)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _attention(q_bthd, k_bskd, v_bskd, mask_bts, scale, rows, block):
  return _forward(q_bthd, k_bskd, v_bskd, mask_bts, scale, rows, block)[0]


def _attention_fwd(q_bthd, k_bskd, v_bskd, mask_bts, scale, rows, block):
  out_bthd, (q_n, out_n, max_n, sum_n) = _forward(q_bthd, k_bskd, v_bskd, mask_bts, scale,
                                                   rows, block)
  # The queries are kept as the forward sliced them, for the backward's loop.
  return out_bthd, (q_n, k_bskd, v_bskd, mask_bts, out_n, max_n, sum_n)


def _attention_bwd(scale, rows, block, residuals, dout_bthd):
  q_n, k_bskd, v_bskd, mask_bts, out_n, max_n, sum_n = residuals
  b, t, h, d = dout_bthd.shape
  s, k = k_bskd.shape[1], k_bskd.shape[2]
  g = h // k

  def one(acc, args):
    dk_acc, dv_acc = acc
    q_rmd, dout_rmd, out_rmd, max_rm, sum_rm, row, head, query = args
    k_rsd, v_rsd, mask_rbs = _slice_inputs(k_bskd, v_bskd, mask_bts, row, head, query,
                                           rows, block)
    logits, allowed = _logits(q_rmd, k_rsd, mask_rbs, scale, g)
    probs = jnp.exp(logits - max_rm[..., None]) / sum_rm[..., None]
    # [D, M] copies of the small operands, kept as such (XLA:CPU ran the key and
    # value gradients' products with a transposed [M, S] operand at a fraction
    # of the speed): the [D, S] gradients are then plain products.
    dout_rdm, q_rdm = jax.lax.optimization_barrier(
        (dout_rmd.transpose(0, 2, 1), q_rmd.transpose(0, 2, 1)))
    dv_rds = _einsum("rdm,rms->rds", dout_rdm, probs.astype(v_rsd.dtype))
    dprobs = _einsum("rmd,rsd->rms", dout_rmd, v_rsd)
    # The softmax's backward: dlogits = p * (dp - sum_s p·dp), with sum_s p·dp
    # = dout · out per query row.
    row_rm = jnp.sum(dout_rmd.astype(jnp.float32) * out_rmd.astype(jnp.float32), axis=-1,
                     keepdims=True)
    dlogits = (jnp.where(allowed, probs * (dprobs - row_rm), 0.0) * scale).astype(q_rmd.dtype)
    dq_rmd = _einsum("rms,rsd->rmd", dlogits, k_rsd)
    dk_rds = _einsum("rdm,rms->rds", q_rdm, dlogits)
    # A (row, head)'s key and value gradients summed over its query blocks, in
    # place in [B, K, D, S] accumulators (stacked per slice they would take
    # T / bq times the keys' memory).
    def add(acc_bkds, x_rds):
      at = (row, head, 0, 0)
      old = jax.lax.dynamic_slice(acc_bkds, at, (rows, 1, d, s))
      return jax.lax.dynamic_update_slice(acc_bkds, old + x_rds[:, None], at)
    return (add(dk_acc, dk_rds), add(dv_acc, dv_rds)), dq_rmd.astype(q_rmd.dtype)

  zeros = jnp.zeros((b, k, d, s), jnp.float32)
  (dk_bkds, dv_bkds), dq_n = jax.lax.scan(
      one, (zeros, zeros),
      (q_n, _slices(dout_bthd, k, rows, block), out_n, max_n, sum_n)
      + _indices(b, k, t, rows, block))
  return (_unslice(dq_n, b, t, k, g, rows, block),
          dk_bkds.transpose(0, 3, 1, 2).astype(k_bskd.dtype),
          dv_bkds.transpose(0, 3, 1, 2).astype(v_bskd.dtype), None)


_attention.defvjp(_attention_fwd, _attention_bwd)


def blockwise_attention(q_bthd: jax.Array, k_bskd: jax.Array, v_bskd: jax.Array,
                        mask_bts: jax.Array, scale: float, block_q: int | None = None,
                        rows: int | None = None) -> jax.Array:
  """Softmax attention [B, T, H, D] over keys / values [B, S, K, D] (H a
  multiple of K), mask bool [B or 1, T, S]; see the module docstring.

  `block_q` (a divisor of T) and `rows` (of B) set a slice's queries and rows;
  by default the largest that fit `SLICE_BYTES` (`slice_shape`).
  """
  b, t, h, _ = q_bthd.shape
  s, k = k_bskd.shape[1], k_bskd.shape[2]
  auto_rows, auto_block = slice_shape(b, t, s, h // k)
  block = block_q or auto_block
  rows = rows or (auto_rows if block_q is None else 1)
  if t % block or b % rows:
    raise ValueError(f"block_q={block} and rows={rows} must divide the {t} queries and "
                     f"{b} rows")
  return _attention(q_bthd, k_bskd, v_bskd, mask_bts, float(scale), int(rows), int(block))
