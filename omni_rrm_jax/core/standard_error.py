"""Standard errors of the held-out numbers: how far a rerun on other pairs may move them.

Plain Python. An accuracy over n pairs is a binomial proportion; a mean reward
over n samples is a sample mean. Both assume independent draws: the judge's
rewards come in groups of samples of one prompt, which are correlated, so
their standard error is a lower bound. The change of a mean reward between two
evaluations of the same prompts is measured per prompt (`paired_change`), the
prompt being the independent unit.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence


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


def paired_change(before: Mapping[str, Sequence], after: Mapping[str, Sequence],
                  name: str) -> dict[str, float | int | None] | None:
  """The change of reward `name` between two evaluations of the same prompts,
  with the standard error of that change.

  `before` and `after` hold, per evaluated prompt, its record's index
  (`"index"`) and its mean of each reward over its samples (`name`). Prompts
  are matched by index (a prompt evaluated twice counts once, at its mean),
  and the change is the mean over the prompts both evaluated of each prompt's
  difference, with the standard error of that mean (sample std of the
  differences, ddof 1, over sqrt n). Because both evaluations draw each
  prompt's samples from the same key, most of the sampling noise cancels in
  a prompt's difference; the prompt is the unit, so its samples' correlation
  is accounted for. Returns None when either side lacks `name`, and a None
  standard error for fewer than two matched prompts.
  """
  if name not in before or name not in after:
    return None
  a, b = _by_index(before, name), _by_index(after, name)
  diffs = [b[i] - a[i] for i in sorted(a.keys() & b.keys())]
  n = len(diffs)
  if n == 0:
    return None
  mean = sum(diffs) / n
  se = None if n < 2 else math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)
  return {"change": mean, "se": se, "prompts": n}


def _by_index(prompts: Mapping[str, Sequence], name: str) -> dict[int, float]:
  sums: dict[int, list[float]] = {}
  for index, value in zip(prompts["index"], prompts[name]):
    sums.setdefault(int(index), []).append(float(value))
  return {i: sum(v) / len(v) for i, v in sums.items()}
