"""Decoding through the KV cache gives the logits of the full no-cache forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import omni_rrm_jax as orj
from omni_rrm_jax.models.decoder import init_cache
from tests.models.hf_fixtures import VOCAB, saved_model
from tests.sampling.sharp_model import left_padded_prompts, sharp_qwen2

TOL = 1e-5
STEPS = 5
SPARE = 3  # unused slots at the end of the cache must not matter


def _folder(case):
  return sharp_qwen2() if case == "qwen2_sharp" else saved_model(case)


@pytest.mark.parametrize("case", ["qwen2_sharp", "qwen2_lm_sliding", "qwen3_lm_tied"])
def test_decode_steps_match_full_forward(case):
  model = orj.from_pretrained(_folder(case))
  ids_bt, mask_bt = left_padded_prompts(seed=1, pads=(0, 2, 4), length=7)
  b, t = ids_bt.shape
  new_bn = np.random.RandomState(2).randint(3, VOCAB, size=(b, STEPS)).astype(np.int32)
  full_ids = np.concatenate([ids_bt, new_bn], axis=1)
  full_mask = np.concatenate([mask_bt, np.ones_like(new_bn)], axis=1)
  # transformers' generate positions: counted from each row's first real token.
  positions = np.maximum(np.cumsum(full_mask, axis=1) - 1, 0)
  ref_btv = np.asarray(model(jnp.asarray(full_ids), attention_mask=jnp.asarray(full_mask),
                             position_ids=jnp.asarray(positions)).logits)

  graphdef, state = nnx.split(model)

  @jax.jit
  def step(state, cache, ids, mask):
    out = nnx.merge(graphdef, state)(ids, attention_mask=mask, cache=cache)
    return out.logits, out.cache

  cache = init_cache(model.cfg, b, t + STEPS + SPARE)
  logits_btv, cache = step(state, cache, jnp.asarray(ids_bt), jnp.asarray(mask_bt))
  real = mask_bt.astype(bool)
  np.testing.assert_allclose(np.asarray(logits_btv)[real], ref_btv[:, :t][real], atol=TOL, rtol=0)
  for i in range(STEPS):
    logits_btv, cache = step(state, cache, jnp.asarray(new_bn[:, i:i + 1]),
                             jnp.ones((b, 1), jnp.int32))
    np.testing.assert_allclose(np.asarray(logits_btv)[:, 0], ref_btv[:, t + i], atol=TOL, rtol=0)

  assert int(cache.end) == t + STEPS
  np.testing.assert_array_equal(np.asarray(cache.next_position_b), mask_bt.sum(1) + STEPS)
  np.testing.assert_array_equal(np.asarray(cache.key_valid_bs)[:, :t + STEPS], full_mask)
  assert not np.asarray(cache.key_valid_bs)[:, t + STEPS:].any()
  assert len(cache.k_bkds) == len(cache.v_bksd) == model.cfg.num_hidden_layers
  slots = t + STEPS + SPARE
  assert cache.k_bkds[0].shape == (b, model.cfg.num_key_value_heads, model.cfg.head_dim, slots)
  assert cache.v_bksd[0].shape == (b, model.cfg.num_key_value_heads, slots, model.cfg.head_dim)


def test_decode_position_matters():
  """A decode token one position off (relative to the cached keys) moves the logits far
  past the tolerance, so the test above checks positions, not just masks."""
  model = orj.from_pretrained(sharp_qwen2())
  ids_bt, mask_bt = left_padded_prompts(seed=1, pads=(0, 2, 4), length=7)
  b, t = ids_bt.shape
  graphdef, state = nnx.split(model)

  @jax.jit
  def right_and_off(state, ids_bt, mask_bt):
    model = nnx.merge(graphdef, state)
    cache = init_cache(model.cfg, b, t + 1)
    cache = model(ids_bt, attention_mask=mask_bt, cache=cache).cache
    token_b1 = jnp.full((b, 1), 7, jnp.int32)
    right = model(token_b1, cache=cache).logits
    off = model(token_b1, position_ids=cache.next_position_b[:, None] + 1, cache=cache).logits
    return right, off

  right, off = right_and_off(state, jnp.asarray(ids_bt), jnp.asarray(mask_bt))
  assert np.abs(np.asarray(right) - np.asarray(off)).max(axis=(1, 2)).min() > 100 * TOL
