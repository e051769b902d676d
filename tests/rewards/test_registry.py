"""The reward registry and weighted combinations."""

from __future__ import annotations

import math

import pytest

from omni_rrm_jax import rewards
from omni_rrm_jax.rewards import contract, weighted_reward

EXPECTED_NAMES = [
    "answer_accuracy", "exact_match", "judge_content", "judge_format", "judge_reward",
    "judge_rubric", "length_reward", "multiple_choice", "think_answer_format",
    "think_answer_format_lenient",
]


def test_every_reward_is_registered():
  assert rewards.REWARDS.names() == EXPECTED_NAMES
  assert rewards.REWARDS.get("exact_match") is rewards.exact_match
  for name in EXPECTED_NAMES:
    low, high = rewards.REWARDS.get(name).reward_range
    assert math.isfinite(low) and math.isfinite(high) and low < high


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(KeyError, match="unknown reward function 'bleu'; known: answer_accuracy, "):
    rewards.combine({"bleu": 1.0})


def test_combine_weights_and_breakdown():
  reward = rewards.combine({"think_answer_format": 0.25, "exact_match": 2.0})
  completions = ["<think>t</think><answer>Paris</answer>", "Paris", "<answer>Rome</answer>"]
  parts = reward.breakdown(None, completions, reference=["paris"] * 3)
  assert parts.per_function == {
      "think_answer_format": [1.0, 0.0, 0.0],
      "exact_match": [1.0, 1.0, 0.0],
  }
  assert parts.total == [2.25, 2.0, 0.0]
  assert reward(None, completions, reference=["paris"] * 3) == [2.25, 2.0, 0.0]
  assert reward.reward_range == (0.0, 2.25)


def test_combine_passes_a_generator_to_every_function():
  reward = rewards.combine({"exact_match": 1.0, "length_reward": 1.0})
  got = reward(None, (c for c in ["a", "b"]), reference=["a", "a"],
               length_target=1, length_tolerance=1)
  assert got == [2.0, 1.0]


@pytest.mark.parametrize("weights", [{}, {"exact_match": float("nan")}, {"exact_match": True}])
def test_combine_rejects_bad_weights(weights):
  with pytest.raises(ValueError):
    rewards.combine(weights)


def test_a_failing_function_scores_its_minimum_and_is_counted():
  def raises(prompts, completions, **columns):
    raise RuntimeError("boom")

  def short(prompts, completions, **columns):
    return [1.0]

  def nan(prompts, completions, **columns):
    return [float("nan"), 1.0]

  raises.reward_range = (-2.0, 1.0)
  reward = weighted_reward.WeightedReward(
      {"raises": (raises, 1.0), "short": (short, 1.0), "nan": (nan, 1.0)})
  parts = reward.breakdown(None, ["x", "y"])
  assert parts.per_function == {"raises": [-2.0, -2.0], "short": [0.0, 0.0], "nan": [0.0, 1.0]}
  assert parts.total == [-2.0, -1.0]
  assert contract.error_counts() == {"raises": 1, "short": 1, "nan": 1}
