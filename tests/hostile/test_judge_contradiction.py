"""A judgment whose verdict contradicts its own scores earns no more format credit than an invalid one, and no
rubric credit (before: full credit for both), and the content minimum."""

from __future__ import annotations

import pytest

from omni_rrm_jax.rewards import judge_rewards as jr
from omni_rrm_jax.rewards.judgment import parse_judgment
from tests.rewards.judgment_samples import judgment_text

A_WINS = "<answer>[[A]]</answer>"
B_WINS = "<answer>[[B]]</answer>"
TIE = "<answer>[[equal]]</answer>"

CONTRADICTIONS = {
    # well-formed in every other way: the verdict and `better` agree, the scores do not
    "low_score_wins": judgment_text(score_A=3, score_B=8),
    "tie_scores_pick_a": judgment_text(score_A=6, score_B=6),
    "equal_with_a_ahead": judgment_text(better="equal", final_verdict=TIE),
    # `better` agrees with the scores, the verdict tag does not
    "verdict_against_scores": judgment_text(final_verdict=B_WINS),
    # `better` is missing: the verdict tag alone contradicts the scores
    "verdict_only": judgment_text(score_A=2, score_B=9, drop=("better",)),
}
CONSISTENT = {
    "a_wins": judgment_text(),
    "b_wins": judgment_text(score_A=2, score_B=9, better="B", final_verdict=B_WINS),
    "tie": judgment_text(score_A=5, score_B=5, better="equal", final_verdict=TIE),
}


@pytest.mark.parametrize("name", sorted(CONTRADICTIONS))
def test_contradiction_loses_format_rubric_and_content(name):
  text = CONTRADICTIONS[name]
  assert parse_judgment(text).contradicts_scores
  # Graded as an invalid judgment: the value and agreement checks fail (the
  # verdict-only case also lacks a key: 3/6).
  expected = 3 / 6 if name == "verdict_only" else 4 / 6
  assert jr.judge_format(None, [text]) == pytest.approx([expected])
  assert jr.judge_format(None, [text], strict=False) == pytest.approx([expected])
  assert jr.judge_rubric(None, [text]) == [0.0]
  assert jr.judge_content(None, [text], label=["A"]) == [jr.CONTENT_MIN]
  assert jr.judge_reward(None, [text], label=["A"]) == pytest.approx(
      [-0.4 + 0.4 * expected])
  # A well-formed contradiction earns what the same judgment with an
  # out-of-range score earns: neither dodge pays more than the other.
  invalid = judgment_text(score_A=11, final_verdict=B_WINS)
  assert jr.judge_format(None, [text]) <= jr.judge_format(None, [invalid])


@pytest.mark.parametrize("name", sorted(CONSISTENT))
def test_consistent_judgment_keeps_full_format_and_rubric_credit(name):
  text = CONSISTENT[name]
  assert not parse_judgment(text).contradicts_scores
  assert jr.judge_format(None, [text]) == [1.0]
  assert jr.judge_rubric(None, [text]) == pytest.approx([1.0])


def test_invalid_scores_are_not_called_a_contradiction():
  """Partial format credit is unchanged when the scores themselves are invalid."""
  text = judgment_text(score_A=11, final_verdict=B_WINS)
  assert not parse_judgment(text).contradicts_scores
  assert jr.judge_format(None, [text]) == [4 / 6]
