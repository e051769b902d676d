"""Temperature, top-k and top-p (nucleus) filtering, and choosing one token per row."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from omni_rrm_jax.core.argmax import argmax_last
from omni_rrm_jax.sampling.params import SamplingParams


def top_k_filter(logits_bv: jax.Array, k: int) -> jax.Array:
  """Sets every logit below the row's k-th largest to -inf (ties at the k-th are kept)."""
  if k <= 0 or k >= logits_bv.shape[-1]:
    return logits_bv
  kth_b1 = jax.lax.top_k(logits_bv, k)[0][:, -1:]
  return jnp.where(logits_bv < kth_b1, -jnp.inf, logits_bv)


def top_p_filter(logits_bv: jax.Array, p: float) -> jax.Array:
  """Keeps the smallest set of most likely tokens whose probability reaches `p`.

  A token is kept when the probability of all strictly more likely tokens is
  below `p`, so the most likely token always survives and `p -> 0` is greedy.
  """
  if p >= 1.0:
    return logits_bv
  sorted_bv = -jnp.sort(-logits_bv, axis=-1)
  probs_bv = jax.nn.softmax(sorted_bv, axis=-1)
  mass_before_bv = jnp.cumsum(probs_bv, axis=-1) - probs_bv
  keep_count_b1 = jnp.sum(mass_before_bv < p, axis=-1, keepdims=True)
  threshold_b1 = jnp.take_along_axis(sorted_bv, keep_count_b1 - 1, axis=-1)
  return jnp.where(logits_bv < threshold_b1, -jnp.inf, logits_bv)


def sampling_logits(logits_bv: jax.Array, params: SamplingParams) -> jax.Array:
  """The float32 logits tokens are drawn from: / temperature, then top-k, then top-p."""
  scaled_bv = logits_bv.astype(jnp.float32) / jnp.float32(params.temperature)
  return top_p_filter(top_k_filter(scaled_bv, params.top_k), params.top_p)


def choose_tokens(logits_bv: jax.Array, rng: jax.Array, params: SamplingParams) -> jax.Array:
  """One token id per row [B] (int32): arg-max when greedy, else a draw.

  The draw is `jax.random.categorical`'s own (the Gumbel-max trick: the arg-max
  of the logits plus Gumbel noise from `rng`), the same token for the same key,
  with the arg-max taken by `argmax_last`. `rng` is one key for the batch, or a
  typed key per row ([B]): then each row's noise comes from its own key alone,
  whatever the other rows are.
  """
  if params.greedy:
    return argmax_last(logits_bv)
  logits_bv = sampling_logits(logits_bv, params)
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) and rng.ndim == 1:
    noise_bv = jax.vmap(lambda key: jax.random.gumbel(key, logits_bv.shape[1:],
                                                      logits_bv.dtype))(rng)
  else:
    noise_bv = jax.random.gumbel(rng, logits_bv.shape, logits_bv.dtype)
  return argmax_last(logits_bv + noise_bv)
