"""One prefill per distinct prompt, its KV cache shared by the prompt's G samples.

GRPO samples G completions of every prompt. Their prompts are the same
tokens (and media), so the prefill, the costliest part of a short rollout, runs
once per prompt; the filled cache rows are then repeated so that rows
`r * G .. r * G + G - 1` continue prompt r, and decoding goes on per sample.

The repetition follows the cache's own structure: for each leaf, the axis
whose size differs between an empty cache of P rows and one of P * G rows is
its row axis (leaves without one, like the write position, are shared as
they are). So the cache layout (per-layer tuples, stacked layers, extra
fields) is the decoder's business alone.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import jax
import jax.numpy as jnp

Cache = TypeVar("Cache")


def repeat_cache_rows(cache: Cache, rows: int, num_samples: int,
                      empty_cache: Callable[[int], Cache]) -> Cache:
  """`cache` of P rows with every row repeated `num_samples` times, copies adjacent.

  Args:
    cache: a filled cache of P rows (any pytree `empty_cache` also builds).
    rows: P.
    num_samples: G, the copies of each row (consecutive in the result).
    empty_cache: rows -> an empty cache of that many rows, only traced for
      its shapes (`jax.eval_shape`), never run.

  Returns:
    The cache of P * G rows: row r * G + g holds prompt row r.
  """
  if num_samples == 1:
    return cache
  one = jax.eval_shape(functools.partial(empty_cache, rows))
  many = jax.eval_shape(functools.partial(empty_cache, rows * num_samples))

  def repeat(x, small, big):
    axes = [i for i, (a, b) in enumerate(zip(small.shape, big.shape)) if a != b]
    if not axes:
      return x
    if len(axes) != 1 or small.shape != x.shape:
      raise ValueError(f"cannot find one row axis in a cache leaf of shape {x.shape}")
    return jnp.repeat(x, num_samples, axis=axes[0])

  return jax.tree.map(repeat, cache, one, many)

