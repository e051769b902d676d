"""The reward functions configs choose by name, and `combine` to weight them."""

from __future__ import annotations

from typing import Mapping

from omni_rrm_jax.core.registry import Registry
from omni_rrm_jax.rewards import judge_rewards, text_rewards
from omni_rrm_jax.rewards.contract import RewardFn
from omni_rrm_jax.rewards.weighted_reward import WeightedReward

REWARDS: Registry[RewardFn] = Registry("reward function")

for _name, _fn in (
    ("judge_format", judge_rewards.judge_format),
    ("judge_content", judge_rewards.judge_content),
    ("judge_rubric", judge_rewards.judge_rubric),
    ("judge_reward", judge_rewards.judge_reward),
    ("think_answer_format", text_rewards.think_answer_format),
    ("think_answer_format_lenient", text_rewards.think_answer_format_lenient),
    ("answer_accuracy", text_rewards.answer_accuracy),
    ("exact_match", text_rewards.exact_match),
    ("multiple_choice", text_rewards.multiple_choice),
    ("length_reward", text_rewards.length_reward),
):
  REWARDS.add(_name, _fn)
del _name, _fn


def combine(names_and_weights: Mapping[str, float]) -> WeightedReward:
  """A weighted sum of registered reward functions.

  Example:
    reward_fn = combine({"think_answer_format": 0.2, "answer_accuracy": 0.8})
    totals = reward_fn(prompts, completions, reference=references)
    parts = reward_fn.breakdown(prompts, completions, reference=references)
    parts.per_function["answer_accuracy"]  # unweighted, for logging

  Every function receives all the columns and options passed in the call.

  Args:
    names_and_weights: `{registered name: weight}`.

  Returns:
    A `WeightedReward`: calling it gives the totals; `.breakdown(...)` also
    gives each function's values.

  Raises:
    KeyError: for an unknown name (the message lists the known ones).
    ValueError: for an empty mapping or a non-finite weight.
  """
  terms = {name: (REWARDS.get(name), weight) for name, weight in names_and_weights.items()}
  return WeightedReward(terms, name="+".join(names_and_weights) or "weighted_reward")
