"""GRPO's reward metrics over the completions of a step or an evaluation."""

import numpy as np
import pytest

from omni_rrm_jax.rl.rollout_step import reward_metrics


def test_means_stds_and_the_number_of_completions():
  sampled = {"rewards": np.array([1.0, 0.0, 0.5, 0.5]),
             "reward/judge_format": np.array([1.0, 1.0, 0.0, 0.0]),
             "lengths": np.array([4, 6, 8, 10]), "truncated": np.array([0, 0, 1, 1])}
  out = reward_metrics(sampled, ["judge_format"], group_size=2)
  assert out["num_completions"] == 4
  assert out["reward/total_mean"] == pytest.approx(0.5)
  # Population std: sqrt(((0.5)^2 + (0.5)^2 + 0 + 0) / 4).
  assert out["reward/total_std"] == pytest.approx(np.sqrt(0.125))
  assert (out["reward/judge_format_mean"], out["reward/judge_format_std"]) == (0.5, 0.5)
  assert (out["completion_length"], out["truncated_frac"]) == (7.0, 0.5)
  # Group (1, 0) varies, group (0.5, 0.5) does not.
  assert out["zero_variance_group_frac"] == 0.5
