"""Standard errors of held-out accuracies and mean rewards, against hand-computed values."""

import math

import pytest

from omni_rrm_jax.eval.standard_error import binomial_se, mean_se


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
