"""Standard errors of held-out accuracies and mean rewards, against hand-computed values."""

import math

import pytest

from omni_rrm_jax.core.standard_error import binomial_se, mean_se, paired_change


def test_binomial_se_by_hand():
  # 21 of 32 pairs right: sqrt(0.65625 * 0.34375 / 32) = 0.083962 ("65.6% ± 8.4").
  assert binomial_se(21 / 32, 32) == pytest.approx(0.083962, abs=1e-6)
  assert binomial_se(0.5, 64) == 0.0625
  assert binomial_se(1.0, 64) == binomial_se(0.0, 64) == 0.0
  assert binomial_se(0.5, 0) is None


def test_binomial_se_rejects_a_rate_outside_zero_one():
  with pytest.raises(ValueError, match="in \\[0, 1\\]"):
    binomial_se(1.5, 10)


def test_mean_se_from_a_population_std_by_hand():
  samples = [0.0, 1.0, 1.0, 0.0, 1.0]
  n, mean = len(samples), sum(samples) / len(samples)
  population_std = math.sqrt(sum((x - mean) ** 2 for x in samples) / n)
  sample_std = math.sqrt(sum((x - mean) ** 2 for x in samples) / (n - 1))
  assert mean_se(population_std, n) == pytest.approx(sample_std / math.sqrt(n))
  assert mean_se(0.3, 10) == pytest.approx(0.1)
  assert mean_se(0.3, 1) is None


def test_paired_change_by_hand():
  # Three prompts in both evaluations, listed in other orders; prompt 9 only before.
  before = {"index": [1, 2, 3, 9], "total": [0.50, 0.75, 1.00, 0.0]}
  after = {"index": [3, 1, 2], "total": [1.00, 0.75, 1.00]}
  # Differences by prompt: 1 -> +0.25, 2 -> +0.25, 3 -> 0; mean 1/6.
  diffs = [0.25, 0.25, 0.0]
  mean = sum(diffs) / 3
  se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2 / 3)
  out = paired_change(before, after, "total")
  assert out == {"change": pytest.approx(mean), "se": pytest.approx(se), "prompts": 3}
  # A shared per-prompt offset cancels: the independent errors would be large,
  # the paired one is zero when every prompt moved by the same amount.
  spread = {"index": [0, 1, 2, 3], "total": [0.0, 1.0, 0.0, 1.0]}
  shifted = {"index": [0, 1, 2, 3], "total": [0.1, 1.1, 0.1, 1.1]}
  out = paired_change(spread, shifted, "total")
  assert out["change"] == pytest.approx(0.1) and out["se"] == pytest.approx(0.0, abs=1e-12)


def test_paired_change_merges_a_repeated_prompt_and_handles_gaps():
  # A prompt drawn twice counts once, at its mean.
  before = {"index": [5, 5, 6], "total": [0.0, 1.0, 0.0]}
  after = {"index": [5, 6], "total": [1.0, 0.0]}
  out = paired_change(before, after, "total")
  assert out["prompts"] == 2 and out["change"] == pytest.approx(0.25)
  assert paired_change(before, after, "judge_format") is None  # not measured
  one = paired_change({"index": [1], "total": [0.0]}, {"index": [1], "total": [1.0]}, "total")
  assert one == {"change": 1.0, "se": None, "prompts": 1}
  assert paired_change({"index": [1], "total": [0.0]}, {"index": [2], "total": [1.0]},
                       "total") is None
