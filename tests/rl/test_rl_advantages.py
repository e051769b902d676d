"""Advantage estimators against hand-computed references."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from omni_rrm_jax.rl import advantages
from omni_rrm_jax.rl.advantages import ADVANTAGE_ESTIMATORS, group_advantages

EPS = 1e-6
_adv = jax.jit(group_advantages, static_argnames=("group_size", "scale", "eps"))

# Group 0 varies, group 1 is constant.
REWARDS = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0], np.float32)


def test_group_scale_uses_sample_std():
  # Group 0: mean 2.5, deviations (-1.5, -0.5, 0.5, 1.5), sum of squares 5,
  # sample variance 5 / 3.
  std = np.sqrt(5.0 / 3.0)
  expected = np.array([-1.5, -0.5, 0.5, 1.5, 0, 0, 0, 0]) / np.array([std + EPS] * 4 + [1] * 4)
  np.testing.assert_allclose(_adv(REWARDS, 4, scale="group"), expected, rtol=1e-6)


def test_batch_scale_uses_batch_sample_std():
  # Batch mean 30 / 8 = 3.75; deviations (-2.75, -1.75, -0.75, 0.25, 1.25 x4);
  # sum of squares 7.5625 + 3.0625 + 0.5625 + 0.0625 + 4 * 1.5625 = 17.5,
  # sample variance 17.5 / 7 = 2.5. Centring is still on the group mean.
  std = np.sqrt(2.5)
  expected = np.array([-1.5, -0.5, 0.5, 1.5, 0, 0, 0, 0]) / (std + EPS)
  np.testing.assert_allclose(_adv(REWARDS, 4, scale="batch"), expected, rtol=1e-6)


def test_none_scale_is_mean_centring():
  expected = np.array([-1.5, -0.5, 0.5, 1.5, 0, 0, 0, 0])
  np.testing.assert_allclose(_adv(REWARDS, 4, scale="none"), expected, rtol=1e-6)


@pytest.mark.parametrize("scale", advantages.SCALES)
def test_identical_rewards_give_exact_zero(scale):
  # 0.1 is not representable, and the float32 mean of three copies is not 0.1
  # bit for bit; the advantage must still be exactly 0.
  rewards = np.array([0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 0.0, 1.0, 0.0], np.float32)
  adv = np.asarray(_adv(rewards, 3, scale=scale))
  assert np.all(adv[:6] == 0.0)
  assert np.all(adv[6:] != 0.0)


def test_group_size_one_is_finite_zero():
  adv = _adv(np.array([0.3, 2.0], np.float32), 1, scale="group")
  np.testing.assert_array_equal(adv, [0.0, 0.0])


def test_batch_not_multiple_of_group_size_is_clear_error():
  with pytest.raises(ValueError, match="not a multiple of group_size 4"):
    group_advantages(np.zeros(10, np.float32), 4)


def test_unknown_scale_lists_known():
  with pytest.raises(ValueError, match="group, batch, none"):
    group_advantages(np.zeros(4, np.float32), 2, scale="rank")


def test_registry():
  assert {"grpo", "grpo_batch_std", "dr_grpo"} <= set(ADVANTAGE_ESTIMATORS.names())
  for name, scale in (("grpo", "group"), ("grpo_batch_std", "batch"), ("dr_grpo", "none")):
    np.testing.assert_array_equal(ADVANTAGE_ESTIMATORS.get(name)(REWARDS, 4),
                                  _adv(REWARDS, 4, scale=scale))
  with pytest.raises(KeyError, match="known: dr_grpo, grpo"):
    ADVANTAGE_ESTIMATORS.get("ppo")


def _builder(reward_weights):
  from omni_rrm_jax.rl.update_batch import UpdateBatchBuilder
  return UpdateBatchBuilder(advantage_fn=ADVANTAGE_ESTIMATORS.get("grpo"), group_size=4, rows=8,
                            mask_truncated=False, prompt_bucket=8, max_prompt_length=8,
                            prompt_media=None, records=[], encoder=None, recipe="judge",
                            reward_weights=reward_weights)


def test_per_reward_advantages_normalise_each_reward_in_its_group():
  # A noisy reward with a large spread next to a small, consistent one: summed
  # first, the noise decides the ranking; apart, each counts by its weight.
  noisy = np.array([1.0, -1.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0], np.float32)
  small = np.array([0.0, 0.1, 0.2, 0.3, 0.1, 0.1, 0.1, 0.1], np.float32)
  batch = {"reward/noisy": noisy, "reward/small": small, "rewards": 0.5 * noisy + 0.5 * small}
  apart = _builder({"noisy": 0.5, "small": 0.5}).advantages(batch)
  expected = 0.5 * _adv(noisy, 4, scale="group") + 0.5 * _adv(small, 4, scale="group")
  np.testing.assert_allclose(apart, expected, rtol=1e-6)
  summed = _builder(None).advantages(batch)
  np.testing.assert_allclose(summed, _adv(batch["rewards"], 4, scale="group"), rtol=1e-6)
  # Within group 0 the small reward's order (0 < 1 < 2 < 3) weighs as much as
  # the noise: the last completion gains on the first.
  assert apart[3] - apart[2] > summed[3] - summed[2]
  # A group whose rewards are all equal gets no advantage either way.
  np.testing.assert_allclose(apart[4:], 0.0, atol=1e-6)


def test_per_reward_advantages_count_the_overlong_penalty():
  zero = np.zeros(8, np.float32)
  penalty = np.array([0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32)
  adv = _builder({"a": 1.0}).advantages({"reward/a": zero, "rewards": penalty,
                                         "overlong_penalty": penalty})
  np.testing.assert_allclose(adv, _adv(penalty, 4, scale="group"), rtol=1e-6)
