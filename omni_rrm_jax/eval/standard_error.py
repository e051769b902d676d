"""Standard errors of the held-out numbers: how far a rerun on other pairs may move them.

Plain Python. An accuracy over n pairs is a binomial proportion; a mean reward
over n samples is a sample mean. Both assume independent draws: the judge's
rewards come in groups of samples of one prompt, which are correlated, so
their standard error is a lower bound.
"""

from __future__ import annotations

import math


def binomial_se(p: float, n: int) -> float | None:
  """sqrt(p (1 - p) / n), the standard error of a proportion `p` over `n` trials.

  Returns None for n = 0 (nothing was measured).
  """
  if n <= 0:
    return None
  if not 0.0 <= p <= 1.0:
    raise ValueError(f"a proportion must be in [0, 1], got {p}")
  return math.sqrt(p * (1.0 - p) / n)


def mean_se(population_std: float, n: int) -> float | None:
  """The standard error of a mean of `n` samples, from their population std (ddof 0).

  The sample std is population_std * sqrt(n / (n - 1)), so the standard error
  sample_std / sqrt(n) is population_std / sqrt(n - 1). Returns None for
  n < 2 (no spread can be estimated).
  """
  if n < 2:
    return None
  return population_std / math.sqrt(n - 1)
