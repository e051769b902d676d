"""GRPO updates accumulated over micro-batches equal the whole minibatch's, per loss type."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import omni_rrm_jax as orj
from omni_rrm_jax.rl.grpo_step import make_grpo_step
from omni_rrm_jax.rl.losses import LOSS_TYPES, loss_denominator, policy_loss
from omni_rrm_jax.sampling.scoring import score_completions
from omni_rrm_jax.train.state import init_train_state

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
            num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
            tie_word_embeddings=False)
B, P, N = 8, 4, 5


def _uneven_batch(graphdef, params) -> dict:
  """Even rows (micro-batch 0 of two) short, odd rows long, row 2 empty, so any
  per-micro-batch normalisation would differ from the whole minibatch's."""
  rng = np.random.default_rng(0)
  prompt_mask = (np.arange(P)[None] >= rng.integers(0, P - 1, size=B)[:, None]).astype(np.int32)
  prompt_ids = np.where(prompt_mask > 0, rng.integers(1, 64, size=(B, P)), 0).astype(np.int32)
  lengths = np.where(np.arange(B) % 2 == 0, 1, N)
  lengths[2] = 0
  completion_mask = (np.arange(N)[None] < lengths[:, None]).astype(np.int32)
  completion_ids = np.where(completion_mask > 0, rng.integers(1, 64, size=(B, N)),
                            0).astype(np.int32)
  logp = np.asarray(score_completions((graphdef, params), prompt_ids, prompt_mask,
                                      completion_ids, completion_mask))
  # Old and reference log-probs away from the current ones, so clipping and KL act.
  old = logp + rng.normal(0.0, 0.3, size=logp.shape).astype(np.float32)
  ref = logp + rng.normal(0.0, 0.3, size=logp.shape).astype(np.float32)
  return dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
              completion_mask=completion_mask, loss_mask=completion_mask,
              old_logp=old * completion_mask, ref_logp=ref * completion_mask,
              adv=rng.normal(size=B).astype(np.float32))


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_policy_loss_parts_sum_to_whole(loss_type):
  rng = np.random.default_rng(1)
  mask_bt = (np.arange(6)[None] < np.array([1, 6, 0, 6, 2, 5])[:, None]).astype(np.float32)
  logp_bt = jnp.asarray(rng.normal(-2.0, 0.5, size=(6, 6)), jnp.float32)
  old_bt = logp_bt + jnp.asarray(rng.normal(0.0, 0.3, size=(6, 6)), jnp.float32)
  adv_b = jnp.asarray(rng.normal(size=6), jnp.float32)
  kw = dict(loss_type=loss_type, max_completion_length=6 if loss_type == "dr_grpo" else None)

  def whole(logp_bt):
    return policy_loss(logp_bt, old_bt, adv_b, mask_bt, **kw)[0]

  den = loss_denominator(mask_bt, loss_type, kw["max_completion_length"])

  def parts(logp_bt):
    return sum(policy_loss(logp_bt[rows], old_bt[rows], adv_b[rows], mask_bt[rows],
                           denominator=den, **kw)[0] for rows in (slice(0, 3), slice(3, 6)))

  np.testing.assert_allclose(parts(logp_bt), whole(logp_bt), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(parts)(logp_bt), jax.grad(whole)(logp_bt), atol=1e-7)
  with pytest.raises(ValueError, match="not both"):
    policy_loss(logp_bt, old_bt, adv_b, mask_bt, loss_type="dapo", num_global_tokens=3,
                denominator=3.0)


# One compilation pair per loss type: the three normalisations (rows with tokens,
# tokens, rows x length) run by default, their siblings bnpo and gspo with -m slow
# (`test_policy_loss_parts_sum_to_whole` covers all five quickly).
@pytest.mark.parametrize("loss_type", [
    t if t in ("grpo", "dapo", "dr_grpo") else pytest.param(t, marks=pytest.mark.slow)
    for t in LOSS_TYPES])
def test_accumulated_grpo_step_equals_whole_minibatch(loss_type):
  model = orj.from_config("Qwen2ForCausalLM", TINY, seed=0)
  tx = optax.sgd(0.5)  # plain SGD: the update is the gradient itself
  graphdef, state = init_train_state(model, tx)
  batch = _uneven_batch(graphdef, state.params)
  results = {}
  for accum, chunk in ((1, 0), (2, 2)):
    step = make_grpo_step(graphdef, tx, loss_type=loss_type, beta=0.05, on_policy=False,
                          max_completion_length=N, grad_accum_steps=accum, logits_chunk=chunk)
    new_state, metrics = step(jax.tree.map(jnp.copy, state), batch)
    results[accum] = jax.device_get((new_state.params, metrics))
  (params1, m1), (params2, m2) = results[1], results[2]
  assert int(m1["skipped"]) == 0 and float(m1["grad_norm"]) > 0
  assert float(m1["clip_frac_low"]) + float(m1["clip_frac_high"]) > 0  # clipping is active
  for k in ("loss", "grad_norm", "num_tokens", "clip_frac_low", "clip_frac_high",
            "ratio_mean", "kl_mean"):
    np.testing.assert_allclose(m2[k], m1[k], rtol=1e-5, atol=1e-7, err_msg=k)
  flat1 = jax.tree_util.tree_flatten_with_path(params1)[0]
  for (path, x1), x2 in zip(flat1, jax.tree.leaves(params2)):
    np.testing.assert_allclose(x2, x1, atol=1e-6, rtol=0, err_msg=jax.tree_util.keystr(path))
