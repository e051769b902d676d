"""The SFT loss with a chunked vocabulary head trains exactly as the plain one."""

import jax
import jax.numpy as jnp
import numpy as np

from omni_rrm_jax.train import losses
from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.step import make_eval_step, make_train_step
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
