"""`argmax_last` gives `jnp.argmax`'s answer, and `choose_tokens` draws
`jax.random.categorical`'s token for the same key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_rrm_jax.core.argmax import argmax_last
from omni_rrm_jax.sampling.logit_filters import choose_tokens
from omni_rrm_jax.sampling.params import SamplingParams


def _hard_rows() -> np.ndarray:
  x = np.random.default_rng(0).normal(size=(12, 257)).astype(np.float32)
  x[0, [5, 9, 200]] = 50.0  # ties: the first wins
  x[1, :] = 3.0  # all equal
  x[2, [4, 100]] = np.nan  # a NaN counts as the largest; the first one wins
  x[3, :] = -np.inf
  x[4, [0, 256]] = np.inf
  x[5, 256] = 99.0  # the last column
  x[6, 0] = 99.0  # the first column
  return x


@pytest.mark.parametrize("shape", [(12, 257), (3, 4, 257)])
def test_argmax_last_equals_jnp_argmax(shape):
  x = _hard_rows().reshape(shape)
  got = jax.jit(argmax_last)(x)
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(got), np.asarray(jnp.argmax(x, axis=-1)))


def test_sampled_tokens_equal_categorical_draws():
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(16, 300)).astype(np.float32) * 3)
  params = SamplingParams(temperature=0.7, max_new_tokens=1)
  for seed in range(20):
    key = jax.random.fold_in(jax.random.key(0), seed)
    want = jax.random.categorical(key, logits / jnp.float32(0.7), axis=-1)
    np.testing.assert_array_equal(np.asarray(choose_tokens(logits, key, params)),
                                  np.asarray(want))


def test_greedy_tokens_are_the_row_maxima():
  x = _hard_rows()[5:]
  got = choose_tokens(jnp.asarray(x), jax.random.key(0),
                      SamplingParams(temperature=0.0, max_new_tokens=1))
  np.testing.assert_array_equal(np.asarray(got), np.argmax(x, axis=-1))
