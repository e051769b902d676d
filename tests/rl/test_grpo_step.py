"""The jitted GRPO update: on-policy shortcut, skips, and the rollout helpers around it."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import omni_rrm_jax as orj
from omni_rrm_jax.rl.grpo_step import make_grpo_step
from omni_rrm_jax.rl.rollout import RewardScorer, pad_groups, parse_reward_spec
from omni_rrm_jax.sampling.scoring import score_completions
from omni_rrm_jax.train.optimizer import make_optimizer
from omni_rrm_jax.train.state import init_train_state

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
            num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
            tie_word_embeddings=True)
B, P, N = 8, 6, 5


def _setup():
  model = orj.from_config("Qwen2ForCausalLM", TINY, seed=0)
  tx, schedule = make_optimizer(dict(learning_rate=1e-2, total_steps=10))
  graphdef, state = init_train_state(model, tx)
  return graphdef, tx, schedule, state


def _batch(graphdef, params, seed=0) -> dict:
  rng = np.random.default_rng(seed)
  prompt_len = rng.integers(2, P + 1, size=B)
  prompt_mask = (np.arange(P)[None] >= P - prompt_len[:, None]).astype(np.int32)
  prompt_ids = np.where(prompt_mask > 0, rng.integers(1, 64, size=(B, P)), 0).astype(np.int32)
  lengths = rng.integers(1, N + 1, size=B)
  completion_mask = (np.arange(N)[None] < lengths[:, None]).astype(np.int32)
  completion_ids = np.where(completion_mask > 0, rng.integers(1, 64, size=(B, N)),
                            0).astype(np.int32)
  old = np.asarray(score_completions((graphdef, params), prompt_ids, prompt_mask,
                                     completion_ids, completion_mask))
  return dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
              completion_mask=completion_mask, loss_mask=completion_mask, old_logp=old,
              adv=rng.normal(size=B).astype(np.float32))


def test_on_policy_equals_stored_old_logprobs_and_skips():
  graphdef, tx, schedule, state = _setup()
  batch = _batch(graphdef, state.params)
  copy = lambda s: jax.tree.map(lambda x: x.copy(), s)  # noqa: E731  (steps donate the state)
  steps = {p: make_grpo_step(graphdef, tx, on_policy=p, schedule=schedule) for p in (True, False)}
  results = {p: step(copy(state), batch) for p, step in steps.items()}
  (s_on, m_on), (s_off, m_off) = results[True], results[False]
  assert float(m_on["ratio_mean"]) == 1.0 and int(m_on["skipped"]) == 0
  np.testing.assert_allclose(m_on["loss"], m_off["loss"], atol=1e-6)
  for a, b in zip(jax.tree.leaves(s_on.params), jax.tree.leaves(s_off.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(s_on.params),
                                                 jax.tree.leaves(state.params))]
  assert any(moved)

  step = steps[True]
  empty = dict(batch, loss_mask=np.zeros_like(batch["loss_mask"]))
  s_empty, m = step(copy(state), empty)
  assert int(m["skipped"]) == 1 and int(m["nonfinite_total"]) == 0
  bad = dict(batch, adv=np.full(B, np.nan, np.float32))
  s_bad, m = step(copy(state), bad)
  assert int(m["skipped"]) == 1 and int(m["nonfinite_total"]) == 1
  for s in (s_empty, s_bad):
    for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(state.params)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("skip", ["empty", "nonfinite"])
def test_logged_learning_rate_follows_applied_updates_after_a_skip(skip):
  """A skipped minibatch (no loss token, or a non-finite loss) applies no update,
  so the next update uses, and logs, the schedule at the same count."""
  model = orj.from_config("Qwen2ForCausalLM", TINY, seed=0)
  tx, schedule = make_optimizer(dict(learning_rate=1e-2, warmup_steps=8, total_steps=10))
  graphdef, state = init_train_state(model, tx)
  batch = _batch(graphdef, state.params)
  bad = (dict(batch, loss_mask=np.zeros_like(batch["loss_mask"])) if skip == "empty"
         else dict(batch, adv=np.full(B, np.nan, np.float32)))
  step = make_grpo_step(graphdef, tx, schedule=schedule)
  logged = []
  for b in (batch, bad, batch):
    state, m = step(state, b)
    logged.append(float(m["learning_rate"]))
  assert int(m["skipped"]) == 0 and int(m["step"]) == 3
  # Two updates applied: the third minibatch is the second update (count 1).
  np.testing.assert_allclose(logged, [schedule(0), schedule(1), schedule(1)], rtol=1e-6)
  assert float(schedule(1)) != float(schedule(2))


def test_reward_spec_scorer_and_padding():
  assert parse_reward_spec("judge_format:0.5, judge_content") == {
      "judge_format": 0.5, "judge_content": 1.0}
  with pytest.raises(ValueError, match="reward.functions has 'judge_format:x'; its weight"):
    parse_reward_spec("judge_format:x")
  with pytest.raises(ValueError, match="lists 'judge_format' twice"):
    parse_reward_spec("judge_format:1,judge_format:2")
  with pytest.raises(KeyError, match="unknown reward function"):
    RewardScorer("no_such_reward:1", "judge")
  from omni_rrm_jax.synthetic.mixture import mixed_pairs
  records = mixed_pairs(2, 0)
  scorer = RewardScorer("judge_format:1,judge_content:1", "judge", overlong=(10, 4))
  texts = [records[0].rationale, "not a judgment"]
  out = scorer(records, texts, {"lengths": np.array([3, 9])})
  np.testing.assert_allclose(out["reward/judge_format"], [1.0, 0.0])
  np.testing.assert_allclose(out["overlong_penalty"], [0.0, -0.75])
  np.testing.assert_allclose(out["rewards"], [2.0, -1.75])  # content: right +1, invalid -1
  np.testing.assert_array_equal(out["parse_failed"], [0, 1])
  padded = pad_groups({"valid": np.ones(2), "adv": np.ones(2), "x": np.arange(2)}, 4)
  np.testing.assert_array_equal(padded["valid"], [1, 1, 0, 0])
  np.testing.assert_array_equal(padded["adv"], [1, 1, 0, 0])
  np.testing.assert_array_equal(padded["x"], [0, 1, 0, 0])
