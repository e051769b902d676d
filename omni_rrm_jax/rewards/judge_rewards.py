"""Rewards for training the generative judge with GRPO against teacher labels.

Every function follows `(prompts, completions, **columns) -> list[float]`, with
per-sample columns:

- `label`: the teacher's preference, "A", "B" or "equal" (required by
  `judge_content`);
- `teacher_scores` (optional): `{"A": score, "B": score}` (or an `(a, b)` pair)
  with scores in 0-10, or None.

Format is graded on the strict format (the whole output is the object), while
content and rubric parse leniently by default, so each reward measures one
thing: a fenced but otherwise perfect judgment loses format credit only.

A verdict (`better` or `final_verdict`) that contradicts the judgment's own
two scores (`ParseResult.contradicts_scores`) is graded as an invalid
judgment: its format credit loses the valid-values and verdict-agreement
checks (at most 4/6, what a judgment with out-of-range scores earns, so
neither dodge pays more than the other), its rubric credit is 0 and its
content the minimum. A policy cannot collect full format and rubric shares
with a verdict its scores do not support.
"""

from __future__ import annotations

import dataclasses

from typing import Any, Mapping

from omni_rrm_jax.rewards.weighted_reward import WeightedReward
from omni_rrm_jax.rewards.contract import is_finite_number, reward_range, score_samples
from omni_rrm_jax.rewards.judgment import (
    BETTER_A, BETTER_B, BETTER_EQUAL, SCORE_MAX, SCORE_MIN, ParseResult, parse_judgment)
from omni_rrm_jax.rewards.rubric import DEFAULT_WINDOW, rubric_score

CONTENT_RIGHT = 1.0
CONTENT_WRONG = 0.0
CONTENT_MIN = -1.0  # unparseable, or scores that contradict `better`.
DEFAULT_SCORE_DISTANCE_WEIGHT = 0.5

_LABELS = {"a": BETTER_A, "b": BETTER_B, "equal": BETTER_EQUAL, "tie": BETTER_EQUAL}


def _label(value: Any) -> str:
  """The teacher label as "A", "B" or "equal"; raises on anything else."""
  if isinstance(value, str) and value.strip().lower() in _LABELS:
    return _LABELS[value.strip().lower()]
  raise ValueError(f"label must be 'A', 'B' or 'equal', got {value!r:.60}")


def _teacher_scores(value: Any) -> tuple[float, float] | None:
  """The teacher's (A, B) scores, None when absent; raises when malformed."""
  if value is None:
    return None
  if isinstance(value, Mapping):
    pair = (value.get("A"), value.get("B"))
  elif isinstance(value, (list, tuple)) and len(value) == 2:
    pair = tuple(value)
  else:
    raise ValueError(
        f"teacher_scores must be {{'A': score, 'B': score}} or None, got {value!r:.60}")
  for score in pair:
    if not is_finite_number(score) or not SCORE_MIN <= score <= SCORE_MAX:
      raise ValueError(
          f"teacher scores must be numbers in {SCORE_MIN}-{SCORE_MAX}, got {value!r:.60}")
  return float(pair[0]), float(pair[1])


@reward_range(0.0, 1.0)
def judge_format(prompts: Any, completions: Any, *, strict: bool = True,
                 **columns: Any) -> list[float]:
  """Partial credit for the judgment format: the share of the six checks passed.

  The checks (see `judgment.FormatChecks`) weigh 1/6 each: the output is a JSON
  object (with `strict`, nothing but the object); exactly the five keys; valid
  values; a `<think>` block in `reasoning`; a valid verdict tag; the verdict
  agrees with `better`. Text with no JSON object scores 0. An object whose
  `better` or verdict contradicts its own valid scores (e.g. score_A=3,
  score_B=8, better "A") fails the valid-values and agreement checks, however
  well-formed.

  Args:
    prompts: unused.
    completions: the judge's outputs.
    strict: whether surrounding text or a fence fails the JSON-object check.
    **columns: unused.

  Returns:
    One score in [0, 1] per completion.
  """
  del prompts
  return score_samples(
      "judge_format", 0.0, completions, columns,
      lambda text, row: _format_credit(parse_judgment(text, strict=strict)))


def _format_credit(result: ParseResult) -> float:
  checks = result.checks
  if result.contradicts_scores:
    checks = dataclasses.replace(checks, valid_values=False, verdict_agrees=False)
  return checks.fraction


@reward_range(CONTENT_MIN, CONTENT_RIGHT)
def judge_content(
    prompts: Any,
    completions: Any,
    *,
    strict: bool = False,
    score_distance_weight: float = DEFAULT_SCORE_DISTANCE_WEIGHT,
    **columns: Any,
) -> list[float]:
  """Rewards the judge for agreeing with the teacher.

  - no valid judgment (see `parse_judgment`): -1;
  - scores that contradict `better` (e.g. better="A" with score_A <= score_B,
    or "equal" with different scores): -1;
  - otherwise +1 when `better` equals the `label` column, 0 when it does not,
  - minus `score_distance_weight * d / 10` when `teacher_scores` are given,
    where d is the mean absolute difference of the two scores from the
    teacher's (0-10).

  With the weight in [0, 1] the reward stays in [-1, 1], and a contradiction is
  never better than an honest wrong preference. A sample without a valid label
  or with malformed teacher scores is a data error: it scores -1 and is counted
  in `contract.error_counts()`.

  Args:
    prompts: unused.
    completions: the judge's outputs.
    strict: whether the judgment must be the whole output.
    score_distance_weight: the penalty for the largest possible score distance.
    **columns: `label` and optionally `teacher_scores`, one per completion.

  Returns:
    One score in [-1, 1] per completion.

  Raises:
    ValueError: if `score_distance_weight` is outside [0, 1] (a config error).
  """
  del prompts
  if not 0.0 <= score_distance_weight <= 1.0:
    raise ValueError(f"score_distance_weight must be in [0, 1], got {score_distance_weight!r}")

  def score_one(text: str, row: Mapping[str, Any]) -> float:
    label = _label(row.get("label"))
    teacher = _teacher_scores(row.get("teacher_scores"))
    result = parse_judgment(text, strict=strict)
    if result.judgment is None or not result.judgment.scores_agree:
      return CONTENT_MIN
    judgment = result.judgment
    value = CONTENT_RIGHT if judgment.better == label else CONTENT_WRONG
    if teacher is not None:
      distance = (abs(judgment.score_a - teacher[0]) + abs(judgment.score_b - teacher[1])) / 2
      value -= score_distance_weight * distance / (SCORE_MAX - SCORE_MIN)
    return value

  return score_samples("judge_content", CONTENT_MIN, completions, columns, score_one)


@reward_range(0.0, 1.0)
def judge_rubric(
    prompts: Any,
    completions: Any,
    *,
    strict: bool = False,
    rubric_window: int = DEFAULT_WINDOW,
    **columns: Any,
) -> list[float]:
  """Rewards reasoning that walks the five rubric dimensions comparing A and B.

  Each dimension is worth 1/5: half for addressing it, half for comparing the
  two responses on it (see `rubric.rubric_score`). No valid judgment scores 0,
  nor does one whose verdict contradicts its own scores: reasoning that ends
  in a verdict it does not support earns nothing for walking the rubric.

  Args:
    prompts: unused.
    completions: the judge's outputs.
    strict: whether the judgment must be the whole output.
    rubric_window: characters either side of a dimension keyword searched for
      mentions of A and B.
    **columns: unused.

  Returns:
    One score in [0, 1] per completion.
  """
  del prompts

  def score_one(text: str, row: Mapping[str, Any]) -> float:
    del row
    result = parse_judgment(text, strict=strict)
    if result.judgment is None or result.contradicts_scores:
      return 0.0
    return rubric_score(result.judgment.think, window=rubric_window)

  return score_samples("judge_rubric", 0.0, completions, columns, score_one)


def make_judge_reward(
    format_weight: float = 0.4,
    content_weight: float = 0.4,
    rubric_weight: float = 0.2,
) -> WeightedReward:
  """The combined judge reward: a weighted sum of format, content and rubric.

  Args:
    format_weight: weight of `judge_format`.
    content_weight: weight of `judge_content`.
    rubric_weight: weight of `judge_rubric`.

  Returns:
    A `WeightedReward`; with the default weights its values lie in [-0.4, 1].
  """
  return WeightedReward(
      {
          "judge_format": (judge_format, format_weight),
          "judge_content": (judge_content, content_weight),
          "judge_rubric": (judge_rubric, rubric_weight),
      },
      name="judge_reward",
  )


judge_reward = make_judge_reward()
