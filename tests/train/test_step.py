"""Train and eval steps on one device: accumulation, non-finite skips, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.nonfinite_check import check_nonfinite
from omni_rrm_jax.train.step import make_eval_step
from omni_rrm_jax.train.task_kind import SFT
from tests.train.fixtures import rm_batch, sft_batch, tiny_model


def host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def assert_trees_close(a, b, atol):
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("kind", ["rm", "sft"])
def test_grad_accumulation_equals_one_big_batch(kind, rm, sft):
  s = rm if kind == "rm" else sft
  batch = rm_batch(1) if kind == "rm" else sft_batch(1)
  if kind == "sft":
    # Micro-batch 0 (even rows) has 4 targets, micro-batch 1 many more.
    counts = batch["loss_mask"][:, 1:].sum(1)
    assert counts[0::2].sum() == 4 and counts[1::2].sum() > 20
  one, m1 = s.steps[1](s.fresh_state(), batch)
  two, m2 = s.steps[2](s.fresh_state(), batch)
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-6)
  np.testing.assert_allclose(m1["grad_norm"], m2["grad_norm"], rtol=1e-5)
  assert_trees_close(host(one.params), host(two.params), atol=1e-6)
  # The step's loss is the plain full-batch loss.
  ev = s.eval_step(s.fresh_state(), batch)
  np.testing.assert_allclose(m1["loss"], ev["loss"], rtol=1e-6)
  if kind == "sft":
    assert float(m2["num_tokens"]) == float(ev["num_tokens"])
    np.testing.assert_allclose(m2["token_accuracy"], ev["token_accuracy"], rtol=1e-6)
  else:
    for k in ("accuracy", "margin_mean", "reward_mean", "reward_std"):
      np.testing.assert_allclose(m2[k], ev[k], rtol=1e-5, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("kind", ["rm", "sft"])
def test_one_micro_batch_runs_without_a_loop(kind, rm, sft):
  s = rm if kind == "rm" else sft
  batch = rm_batch(1) if kind == "rm" else sft_batch(1)
  state = s.fresh_state()
  loops = {a: s.steps[a].lower(state, batch).as_text().count("stablehlo.while") for a in (1, 2)}
  assert loops[1] == 0 and loops[2] >= 1, loops
  # The same metrics, shaped alike, either way.
  m1 = jax.eval_shape(s.steps[1]._fn, state, batch)[1]
  m2 = jax.eval_shape(s.steps[2]._fn, state, batch)[1]
  assert jax.tree.map(lambda x: (x.shape, x.dtype), m1) == \
      jax.tree.map(lambda x: (x.shape, x.dtype), m2)


def test_donated_state_leaves_model_usable(rm):
  state = rm.fresh_state()
  rm.steps[1](state, rm_batch(2))
  assert all(x.is_deleted() for x in jax.tree.leaves(state.params))  # donated
  # The state owned copies, so the model's own arrays survive the donation.
  assert not any(x.is_deleted() for x in jax.tree.leaves(nnx.state(rm.model)))


def test_nonfinite_step_is_skipped_then_recovered(rm):
  state = rm.fresh_state()
  state, m = rm.steps[1](state, rm_batch(3))
  assert int(m["skipped"]) == 0 and int(m["step"]) == 1
  before = host((state.params, state.opt_state))
  poisoned = rm_batch(4)
  poisoned["margin"][2] = np.nan
  state, m = rm.steps[1](state, poisoned)
  assert int(m["skipped"]) == 1 and not np.isfinite(float(m["loss"]))
  assert int(m["nonfinite_streak"]) == 1 and int(m["nonfinite_total"]) == 1
  assert int(m["step"]) == 2
  assert_trees_close(host((state.params, state.opt_state)), before, atol=0)
  check_nonfinite(host(m), rm.steps[1].max_nonfinite_streak)  # 1 < 2: fine
  # The learning rate follows applied updates (1), not batches (2).
  np.testing.assert_allclose(m["learning_rate"], rm.schedule(1), rtol=1e-6)

  state, m = rm.steps[1](state, poisoned)
  assert int(m["nonfinite_streak"]) == 2
  with pytest.raises(FloatingPointError, match="2 consecutive train steps"):
    check_nonfinite(host(m), rm.steps[1].max_nonfinite_streak)

  state, m = rm.steps[1](state, rm_batch(5))
  assert int(m["skipped"]) == 0 and int(m["nonfinite_streak"]) == 0
  assert int(m["nonfinite_total"]) == 2 and int(m["step"]) == 4
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b),
                                         host(state.params), before[0]))
  assert any(changed)


def test_padding_rows_do_not_change_the_update(rm):
  batch = rm_batch(6)
  padded = {k: v.copy() for k, v in batch.items()}
  padded["valid"][6:] = 0.0
  padded["margin"][6:] = np.nan  # garbage in padding rows must not leak
  # The reference: the same 6 real pairs, padded with copies that count for nothing.
  ref = {k: v.copy() for k, v in batch.items()}
  ref["valid"][6:] = 0.0
  for k in ("chosen_input_ids", "chosen_attention_mask", "rejected_input_ids",
            "rejected_attention_mask", "margin"):
    ref[k][6:] = ref[k][:2]
  a, ma = rm.steps[1](rm.fresh_state(), padded)
  b, mb = rm.steps[1](rm.fresh_state(), ref)
  assert int(ma["skipped"]) == 0
  np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-6)
  assert_trees_close(host(a.params), host(b.params), atol=1e-7)


def test_reward_model_learns_a_marker_preference(rm):
  state = rm.fresh_state()
  eval_batch = rm_batch(100, marker=True)
  start = host(rm.eval_step(state, eval_batch))
  losses = []
  for i in range(25):
    state, m = rm.steps[1](state, rm_batch(200 + i, marker=True))
    losses.append(float(m["loss"]))
  end = host(rm.eval_step(state, eval_batch))
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05, losses
  assert float(end["loss"]) < float(start["loss"]) - 0.05
  assert float(end["accuracy"]) >= max(float(start["accuracy"]), 0.75)


def test_unknown_batch_keys_are_an_error(rm):
  batch = rm_batch(7)
  batch["labels"] = batch.pop("margin")
  with pytest.raises(KeyError, match="unknown \\['labels'\\]"):
    rm.eval_step(rm.fresh_state(), batch)


def test_bfloat16_compute_float32_loss(sft):
  model = tiny_model("sft", dtype="bfloat16")
  graphdef, state = init_train_state(model, sft.tx)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))  # master weights
  m = make_eval_step(graphdef, SFT)(state, sft_batch(9))
  assert m["loss"].dtype == jnp.float32
  # bf16 logits, fp32 loss: close to the fp32 model's loss at the same weights.
  ref = sft.eval_step(sft.fresh_state(), sft_batch(9))
  np.testing.assert_allclose(m["loss"], ref["loss"], rtol=2e-2)
