"""The SFT loss with a chunked vocabulary head, or one over the target positions only,
trains exactly as the plain one."""

import jax
import jax.numpy as jnp
import numpy as np

from omni_rrm_jax.train import losses
from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.step import make_eval_step, make_train_step
import pytest

from omni_rrm_jax.train.task_kind import SFT, sft_targets
from tests.train.fixtures import sft_batch, tiny_model, tiny_optimizer


def test_chunked_sft_step_equals_plain():
  model = tiny_model("sft")
  tx, schedule = tiny_optimizer()
  graphdef, _ = init_train_state(model, tx)
  batch = sft_batch(4)  # T=12: 11 predicted positions, chunks of 4 (the last padded)
  # The reference: cross-entropy of the model's full [B, T, V] logits.
  logits_btv = model(jnp.asarray(batch["input_ids"]),
                     attention_mask=jnp.asarray(batch["attention_mask"])).logits
  _, reference = losses.causal_lm_loss(logits_btv, batch["input_ids"],
                                       sft_targets(jax.tree.map(jnp.asarray, batch)))
  results = {}
  for chunk in (0, 4):
    evaluated = make_eval_step(graphdef, SFT, logits_chunk=chunk)(
        init_train_state(model, tx, seed=0)[1], batch)
    step = make_train_step(graphdef, tx, SFT, grad_accum_steps=2, schedule=schedule,
                           logits_chunk=chunk)
    state, metrics = step(init_train_state(model, tx, seed=0)[1], batch)
    results[chunk] = jax.device_get((state.params, metrics, evaluated))
  (params0, m0, ev0), (params4, m4, ev4) = results[0], results[4]
  for k in ("loss", "token_accuracy", "num_tokens"):
    np.testing.assert_allclose(ev4[k], reference[k], rtol=1e-5, atol=1e-7, err_msg=k)
    np.testing.assert_allclose(m4[k], reference[k], rtol=1e-5, atol=1e-7, err_msg=k)
  for k in ("loss", "token_accuracy", "num_tokens", "grad_norm"):
    np.testing.assert_allclose(m4[k], m0[k], rtol=1e-5, atol=1e-7, err_msg=k)
  for k in ("loss", "token_accuracy", "num_tokens"):
    np.testing.assert_allclose(ev4[k], ev0[k], rtol=1e-5, atol=1e-7, err_msg=k)
  assert float(m0["grad_norm"]) > 0
  flat0 = jax.tree_util.tree_flatten_with_path(params0)[0]
  for (path, x0), x4 in zip(flat0, jax.tree.leaves(params4)):
    np.testing.assert_allclose(x4, x0, atol=1e-6, rtol=0, err_msg=jax.tree_util.keystr(path))


def _late_targets(batch: dict, last: int) -> dict:
  """`batch` with each row's targets cut to its `last` final real tokens at most."""
  lengths = batch["attention_mask"].sum(1)
  start = np.maximum(np.argmax(batch["loss_mask"] > 0, axis=1), lengths - last)
  positions = np.arange(batch["input_ids"].shape[1])[None, :]
  loss_mask = (positions >= start[:, None]) & (batch["loss_mask"] > 0)
  return {**batch, "loss_mask": loss_mask.astype(np.int32)}


@pytest.mark.parametrize("chunk", [0, 2])
def test_sft_step_over_target_positions_only_equals_plain(chunk):
  model = tiny_model("sft")
  tx, schedule = tiny_optimizer()
  graphdef, _ = init_train_state(model, tx)
  batch = _late_targets(sft_batch(5), last=4)  # 1-4 targets a row of 11 positions
  keep = int(batch["loss_mask"][:, 1:].sum(1).max())
  assert keep == 4
  results = {}
  for target_logits in (0, keep):
    evaluated = make_eval_step(graphdef, SFT, logits_chunk=chunk, target_logits=target_logits)(
        init_train_state(model, tx, seed=0)[1], batch)
    step = make_train_step(graphdef, tx, SFT, grad_accum_steps=2, schedule=schedule,
                           logits_chunk=chunk, target_logits=target_logits)
    state, metrics = step(init_train_state(model, tx, seed=0)[1], batch)
    results[target_logits] = jax.device_get((state.params, metrics, evaluated))
  (params0, m0, ev0), (params_k, m_k, ev_k) = results[0], results[keep]
  for k in ("loss", "token_accuracy", "num_tokens", "grad_norm"):
    np.testing.assert_allclose(m_k[k], m0[k], rtol=1e-5, atol=1e-7, err_msg=k)
  for k in ("loss", "token_accuracy", "num_tokens"):
    np.testing.assert_allclose(ev_k[k], ev0[k], rtol=1e-5, atol=1e-7, err_msg=k)
  assert float(m0["num_tokens"]) == batch["loss_mask"][:, 1:].sum()
  flat0 = jax.tree_util.tree_flatten_with_path(params0)[0]
  for (path, x0), x_k in zip(flat0, jax.tree.leaves(params_k)):
    np.testing.assert_allclose(x_k, x0, atol=1e-6, rtol=0, err_msg=jax.tree_util.keystr(path))


def test_the_head_sees_only_the_kept_positions_in_order():
  rng = np.random.default_rng(0)
  h_bte = jnp.asarray(rng.standard_normal((2, 7, 3)), jnp.float32)
  w_ev = jnp.asarray(rng.standard_normal((3, 5)), jnp.float32)
  ids_bt = jnp.asarray(rng.integers(0, 5, (2, 7)), jnp.int32)
  mask_bt = jnp.asarray([[0, 0, 1, 0, 1, 1, 0], [0, 1, 0, 0, 0, 0, 0]], jnp.int32)
  seen = []

  def head(h):
    seen.append(h.shape)
    return h @ w_ev

  full = losses.causal_lm_head_token_losses(head, h_bte, ids_bt, mask_bt)
  kept = losses.causal_lm_head_token_losses(head, h_bte, ids_bt, mask_bt, keep=3)
  assert seen == [(2, 6, 3), (2, 3, 3)]
  # Row 0's targets are positions 2, 4, 5 (shifted: 1, 3, 4); row 1's is 1 (shifted: 0).
  np.testing.assert_allclose(kept[0][0], full[0][0, [1, 3, 4]], rtol=1e-6)
  np.testing.assert_allclose(kept[0][1], [full[0][1, 0], 0, 0], rtol=1e-6)
  np.testing.assert_array_equal(kept[2], [[1, 1, 1], [1, 0, 0]])
  for a, b in zip(kept, full):
    np.testing.assert_allclose(jnp.sum(a), jnp.sum(b), rtol=1e-6)
