"""`jnp.argmax` over the last axis, as two plain reductions.

XLA lowers `jnp.argmax` to one reduction over (value, index) pairs; XLA:CPU runs
that reduction element by element, about six times slower than a max and a min
over the same [4, 4096] logits (63 vs 11 microseconds). Greedy decoding takes one
per generated token, sampling one per draw (the Gumbel-max trick), and the token
accuracy of SFT and the judge's scoring one per position.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def argmax_last(x: jax.Array) -> jax.Array:
  """int32 index of the largest entry along the last axis: `jnp.argmax(x, -1)`'s answer.

  The first index wins ties; a NaN counts as the largest value (the first NaN
  wins), as in `jnp.argmax`.
  """
  nan = jnp.isnan(x)
  hit = jnp.where(jnp.any(nan, axis=-1, keepdims=True), nan,
                  x == jnp.max(x, axis=-1, keepdims=True))
  iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  return jnp.min(jnp.where(hit, iota, x.shape[-1]), axis=-1)
