"""Judge SFT's response probes: two more targets a row, read at prompt positions."""

import jax
import jax.numpy as jnp
import numpy as np

from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.step import make_eval_step, make_train_step
from omni_rrm_jax.train.task_kind import SFT, sft_targets
from tests.train.fixtures import sft_batch, tiny_model, tiny_optimizer


def _with_probes(batch: dict, seed: int) -> dict:
  """`batch` with two probes a row at random prompt positions, weights 1-3, the
  last row invalid (its probes must count for nothing)."""
  rng = np.random.default_rng(seed)
  b, t = batch["input_ids"].shape
  valid = batch["valid"].copy()
  valid[-1] = 0
  return {**batch, "valid": valid,
          "probe_positions": rng.integers(0, t // 2, (b, 2)).astype(np.int32),
          "probe_targets": rng.integers(1, 50, (b, 2)).astype(np.int32),
          "probe_weights": rng.integers(1, 4, (b, 2)).astype(np.int32)}


def _by_hand(model, batch: dict) -> tuple[float, float]:
  """(loss, num_tokens): every target's and probe's weighted cross-entropy from
  the model's full logits, over the sum of their weights."""
  logits = model(jnp.asarray(batch["input_ids"]),
                 attention_mask=jnp.asarray(batch["attention_mask"])).logits
  logp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
  weights = np.asarray(sft_targets(jax.tree.map(jnp.asarray, batch)))
  total = count = 0.0
  for row in range(logp.shape[0]):
    for pos in range(1, logp.shape[1]):
      w = weights[row, pos]
      total -= w * logp[row, pos - 1, batch["input_ids"][row, pos]]
      count += w
    for side in range(2):
      w = batch["probe_weights"][row, side] * batch["valid"][row]
      pos, target = batch["probe_positions"][row, side], batch["probe_targets"][row, side]
      total -= w * logp[row, pos, target]
      count += w
  return total / count, count


def test_probes_add_their_weighted_cross_entropy_at_their_positions():
  model = tiny_model("sft")
  tx, schedule = tiny_optimizer()
  graphdef, _ = init_train_state(model, tx)
  batch = _with_probes(sft_batch(7), seed=3)
  loss, count = _by_hand(model, batch)
  evaluated = make_eval_step(graphdef, SFT)(init_train_state(model, tx, seed=0)[1], batch)
  step = make_train_step(graphdef, tx, SFT, grad_accum_steps=2, schedule=schedule)
  _, metrics = step(init_train_state(model, tx, seed=0)[1], batch)
  for got in (evaluated, metrics):
    np.testing.assert_allclose(float(got["loss"]), loss, rtol=1e-5)
    np.testing.assert_allclose(float(got["num_tokens"]), count, rtol=0)


def test_probes_of_weight_zero_train_as_no_probes():
  model = tiny_model("sft")
  tx, schedule = tiny_optimizer()
  graphdef, _ = init_train_state(model, tx)
  plain = sft_batch(8)
  silent = {**_with_probes(plain, seed=4), "valid": plain["valid"]}
  silent["probe_weights"] = np.zeros_like(silent["probe_weights"])
  heard = {**silent, "probe_weights": np.ones_like(silent["probe_weights"])}
  step = make_train_step(graphdef, tx, SFT, schedule=schedule)
  out = {name: jax.device_get(step(init_train_state(model, tx, seed=0)[1], batch))
         for name, batch in (("plain", plain), ("silent", silent), ("heard", heard))}
  leaves = {name: jax.tree.leaves(state.params) for name, (state, _) in out.items()}
  for a, b in zip(leaves["plain"], leaves["silent"]):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(leaves["plain"], leaves["heard"]))
  assert float(out["heard"][1]["num_tokens"]) == float(out["plain"][1]["num_tokens"]) + 16
