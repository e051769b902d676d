"""Bootstrap intervals: seeded, around the estimate, narrower with more data, and
equal to an independent computation."""

import numpy as np
import pytest
from scipy import stats

from omni_rrm_jax.eval.bootstrap import bootstrap_interval, mean_interval
from omni_rrm_jax.core.standard_error import binomial_se


def _right(n, p, seed=0):
  return (np.random.default_rng(seed).random(n) < p).astype(float)


def test_seeded_and_contains_the_estimate():
  values = _right(200, 0.7)
  low, high = mean_interval(values, seed=3)
  assert mean_interval(values, seed=3) == [low, high]
  assert mean_interval(values, seed=4) != [low, high]
  assert low < values.mean() < high


def test_width_shrinks_with_n_like_the_binomial_standard_error():
  widths = {}
  for n in (100, 400, 1600):
    low, high = mean_interval(_right(n, 0.7, seed=n), num_samples=2000)
    widths[n] = high - low
    # A 95% interval is about +-1.96 standard errors.
    se = binomial_se(float(_right(n, 0.7, seed=n).mean()), n)
    assert widths[n] == pytest.approx(2 * 1.96 * se, rel=0.15)
  assert widths[100] > widths[400] > widths[1600]
  assert widths[100] / widths[1600] == pytest.approx(4.0, rel=0.25)


def test_matches_a_numpy_reference_and_scipy():
  values = _right(150, 0.6, seed=1)
  # The reference: numpy's generator drawn the same way, percentiles by hand.
  rng = np.random.default_rng(7)
  means = np.array([values[rng.integers(0, 150, 150)].mean() for _ in range(500)])
  # (rng.integers row by row draws the same stream as one [500, 150] call.)
  low, high = mean_interval(values, num_samples=500, seed=7)
  assert low == pytest.approx(np.percentile(means, 2.5), abs=1e-12)
  assert high == pytest.approx(np.percentile(means, 97.5), abs=1e-12)
  # scipy's own percentile bootstrap agrees within Monte-Carlo error.
  ref = stats.bootstrap((values,), np.mean, n_resamples=5000, method="percentile",
                        random_state=0).confidence_interval
  low, high = mean_interval(values, num_samples=5000)
  assert low == pytest.approx(ref.low, abs=0.01) and high == pytest.approx(ref.high, abs=0.01)


def test_statistic_of_indices_equals_mean_interval_for_a_mean():
  values = _right(80, 0.5, seed=2)
  assert bootstrap_interval(lambda idx: values[idx].mean(), 80, num_samples=300, seed=5) == (
      mean_interval(values, num_samples=300, seed=5))


def test_empty_gives_none_and_bad_sample_count_is_an_error():
  assert mean_interval([]) is None and bootstrap_interval(np.mean, 0) is None
  with pytest.raises(ValueError, match="num_samples"):
    mean_interval([1.0], num_samples=0)
