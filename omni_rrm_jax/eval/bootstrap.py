"""Percentile bootstrap confidence intervals for the reported numbers.

Plain NumPy, seeded: the same report gives the same interval. An accuracy is
the mean of per-record 0/1 values; a benchmark's aggregate (RewardBench's
section-weighted score, RewardBench 2's mean over subsets, ...) is any
function of which records were drawn, so both go through `bootstrap_interval`
with resampled record indices. `scipy.stats.bootstrap` does the same for a
mean (the tests compare against it) but not for a statistic of a whole
resampled report, hence this small function.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

DEFAULT_SAMPLES = 1000
LEVEL = 0.95


def resample_indices(n: int, num_samples: int, seed: int) -> np.ndarray:
  """[num_samples, n] indices drawn with replacement (numpy's PCG64, `seed`)."""
  return np.random.default_rng(seed).integers(0, n, size=(num_samples, n))


def _percentiles(stats_s: np.ndarray, level: float) -> list[float]:
  tail = (1.0 - level) / 2 * 100
  low, high = np.percentile(stats_s, [tail, 100 - tail])
  return [float(low), float(high)]


def mean_interval(values_n: Sequence[float], *, num_samples: int = DEFAULT_SAMPLES,
                  seed: int = 0, level: float = LEVEL) -> list[float] | None:
  """[low, high] of the `level` percentile bootstrap interval of a mean.

  Args:
    values_n: one value per record (1.0 / 0.0 for right / wrong).
    num_samples: bootstrap resamples.
    seed: seeds the resampling.
    level: the interval's coverage, 0.95 for a 95% interval.

  Returns:
    [low, high], or None when there are no values.
  """
  values_n = np.asarray(values_n, dtype=np.float64)
  if values_n.size == 0:
    return None
  if num_samples <= 0:
    raise ValueError(f"num_samples must be > 0, got {num_samples}")
  means_s = values_n[resample_indices(values_n.size, num_samples, seed)].mean(axis=1)
  return _percentiles(means_s, level)


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n: int, *,
                       num_samples: int = DEFAULT_SAMPLES, seed: int = 0,
                       level: float = LEVEL) -> list[float] | None:
  """[low, high] of the percentile interval of `statistic(indices_n)`.

  Args:
    statistic: maps the indices of one resample (with repeats) to a number,
      e.g. a benchmark's aggregate over those records.
    n: how many records there are.
    num_samples, seed, level: as in `mean_interval`.

  Returns:
    [low, high], or None when n is 0.
  """
  if n == 0:
    return None
  if num_samples <= 0:
    raise ValueError(f"num_samples must be > 0, got {num_samples}")
  stats_s = np.array([statistic(idx) for idx in resample_indices(n, num_samples, seed)])
  return _percentiles(stats_s, level)
