"""A weighted sum of reward functions that keeps each function's values for logging."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from omni_rrm_jax.rewards.contract import (
    RewardFn, completion_list, is_finite_number, minimum_of, record_error)


@dataclasses.dataclass(frozen=True)
class RewardBreakdown:
  """A combined reward and its parts.

  Attributes:
    total: the weighted sum, one value per completion.
    per_function: each function's own (unweighted) values, by name.
  """

  total: list[float]
  per_function: dict[str, list[float]]


class WeightedReward:
  """`sum_i weight_i * reward_i(prompts, completions, **columns)`, never raising.

  Calling it follows the reward convention and returns the totals; `breakdown`
  also returns every function's values, for per-function logging. A function
  that raises, returns the wrong number of values or a non-finite value has
  those values replaced by its minimum and the error counted (see
  `contract.error_counts`) under its name.
  """

  def __init__(self, terms: Mapping[str, tuple[RewardFn, float]], *, name: str = "weighted_reward"):
    """Builds the sum.

    Args:
      terms: `{name: (reward function, weight)}`, in the order to evaluate them.
      name: how this sum is called in logs and error counts.

    Raises:
      ValueError: if `terms` is empty or a weight is not a finite number.
    """
    if not terms:
      raise ValueError("a weighted reward needs at least one reward function")
    for term_name, (_, weight) in terms.items():
      if not is_finite_number(weight):
        raise ValueError(f"weight of reward {term_name!r} must be a finite number, got {weight!r}")
    self.terms = {key: (fn, float(weight)) for key, (fn, weight) in terms.items()}
    self.__name__ = name
    ranges = [getattr(fn, "reward_range", None) for fn, _ in self.terms.values()]
    if all(ranges):
      weights = [weight for _, weight in self.terms.values()]
      low = sum(w * (lo if w >= 0 else hi) for w, (lo, hi) in zip(weights, ranges))
      high = sum(w * (hi if w >= 0 else lo) for w, (lo, hi) in zip(weights, ranges))
      self.reward_range = (low, high)

  def __repr__(self) -> str:
    parts = ", ".join(f"{key}={weight:g}" for key, (_, weight) in self.terms.items())
    return f"WeightedReward({parts})"

  def breakdown(self, prompts: Any, completions: Any, **columns: Any) -> RewardBreakdown:
    """Scores the completions with every function and sums them.

    Args:
      prompts: the prompts, passed through to every function.
      completions: the completions, passed through to every function.
      **columns: per-sample columns and options, passed through to every function.

    Returns:
      The totals and each function's values.
    """
    completions = completion_list(completions)
    n = len(completions)
    per_function = {}
    for key, (fn, _) in self.terms.items():
      per_function[key] = self._values(key, fn, n, prompts, completions, columns)
    total = [0.0] * n
    for key, (_, weight) in self.terms.items():
      total = [t + weight * v for t, v in zip(total, per_function[key])]
    return RewardBreakdown(total=total, per_function=per_function)

  def __call__(self, prompts: Any, completions: Any, **columns: Any) -> list[float]:
    return self.breakdown(prompts, completions, **columns).total

  @staticmethod
  def _values(key: str, fn: RewardFn, n: int, prompts: Any, completions: list[Any],
              columns: Mapping[str, Any]) -> list[float]:
    minimum = minimum_of(fn)
    try:
      values = [float(v) for v in fn(prompts, completions, **columns)]
    except Exception as e:  # noqa: BLE001 -- a user function may raise; the sum must not.
      record_error(key, f"{type(e).__name__}: {str(e)[:200]}", with_traceback=True)
      return [minimum] * n
    if len(values) != n:
      record_error(key, f"returned {len(values)} values for {n} completions")
      return [minimum] * n
    for i, value in enumerate(values):
      if not math.isfinite(value):
        record_error(key, f"non-finite value {value}")
        values[i] = minimum
    return values
