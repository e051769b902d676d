"""Log-probabilities of target tokens without a whole [B, T, V] logits array.

  out = token_logprobs(model.lm_logits, h_bte, targets_bt, chunk=512)
  out.logp_bt, out.log_z_bt, out.correct_bt              # each [B, T]

The vocabulary projection of a 7B model's 152k-token vocabulary at a few
thousand tokens is gigabytes per row in float32, and its gradient as much
again. With `chunk > 0` the positions go through the head `chunk` at a time
inside `jax.lax.scan`, each chunk's body under `jax.checkpoint`: the forward
keeps only the [B, T] results, the backward recomputes one chunk's logits at a
time, so neither pass ever holds more than a [B, chunk, V] slice. The head is
called as given (a model's `lm_logits`), so tied or untied weights, any
adapter on it and its sharding constraints all apply unchanged.
"""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from omni_rrm_jax.core.argmax import argmax_last


@flax.struct.dataclass
class TokenLogprobs:
  """Per-position results of `token_logprobs`, each [B, T] float32.

  Attributes:
    logp_bt: log-probability of the target token (logits / temperature).
    log_z_bt: log of the softmax normaliser (logsumexp of logits / temperature).
    correct_bt: 1.0 where the argmax of the logits is the target, else 0.0.
  """
  logp_bt: jax.Array
  log_z_bt: jax.Array
  correct_bt: jax.Array


def _scores(logits_btv: jax.Array, targets_bt: jax.Array,
            temperature: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  logits_btv = logits_btv.astype(jnp.float32)
  if temperature != 1.0:
    logits_btv = logits_btv / jnp.float32(temperature)
  log_z_bt = jax.nn.logsumexp(logits_btv, axis=-1)
  target_logit_bt = jnp.take_along_axis(logits_btv, targets_bt[..., None], axis=-1)[..., 0]
  correct_bt = (argmax_last(logits_btv) == targets_bt).astype(jnp.float32)
  return target_logit_bt - log_z_bt, log_z_bt, correct_bt


def chunk_layout(length: int, chunk: int) -> tuple[int, int]:
  """`(num_chunks, chunk_size)` covering `length` positions with chunks of at
  most `chunk`, as even as possible (so padding stays under `num_chunks`)."""
  if chunk < 0:
    raise ValueError(f"logits chunk must be >= 0, got {chunk}")
  if chunk == 0 or chunk >= length:
    return 1, length
  num_chunks = -(-length // chunk)
  return num_chunks, -(-length // num_chunks)


def token_logprobs(head: Callable[[jax.Array], jax.Array], h_bte: jax.Array,
                   targets_bt: jax.Array, *, chunk: int = 0,
                   temperature: float = 1.0) -> TokenLogprobs:
  """Target log-probs, log-normalisers and argmax hits of `head(h_bte)`.

  Args:
    head: hidden states [B, C, E] -> logits [B, C, V] (e.g. `model.lm_logits`);
      called once on the whole of `h_bte` when `chunk` is 0 or >= T, else once
      per chunk (inside a scan, under `jax.checkpoint`).
    h_bte: [B, T, E] final hidden states.
    targets_bt: int [B, T] the token each position is scored on.
    chunk: positions per head call; 0 projects all T positions at once (the
      plain form). A chunk that does not divide T is evened out and the last
      one padded; padded positions are dropped from the outputs.
    temperature: the logits are divided by it first (static).

  Returns:
    A `TokenLogprobs` of [B, T] float32 arrays.
  """
  b, t = targets_bt.shape
  num_chunks, size = chunk_layout(t, int(chunk))
  if num_chunks == 1:
    return TokenLogprobs(*_scores(head(h_bte), targets_bt, temperature))

  pad = num_chunks * size - t
  h_bte = jnp.pad(h_bte, ((0, 0), (0, pad), (0, 0)))
  targets_bt = jnp.pad(targets_bt, ((0, 0), (0, pad)))
  # [B, n*c, ...] -> [n, B, c, ...]: the scan walks the chunks, rows stay sharded.
  h_nbce = jnp.swapaxes(h_bte.reshape(b, num_chunks, size, -1), 0, 1)
  targets_nbc = jnp.swapaxes(targets_bt.reshape(b, num_chunks, size), 0, 1)

  @jax.checkpoint
  def one_chunk(h_bce, targets_bc):
    # Only the inputs are saved: the backward pass recomputes this chunk's logits.
    return _scores(head(h_bce), targets_bc, temperature)

  def body(carry, xs):
    return carry, one_chunk(*xs)

  _, outs_nbc = jax.lax.scan(body, None, (h_nbce, targets_nbc))

  def unchunk(x_nbc):
    return jnp.swapaxes(x_nbc, 0, 1).reshape(b, num_chunks * size)[:, :t]

  return TokenLogprobs(*(unchunk(x) for x in outs_nbc))
