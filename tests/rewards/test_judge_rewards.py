"""Judge rewards: format partial credit, content against teacher labels, rubric coverage."""

from __future__ import annotations

import pytest

from omni_rrm_jax.rewards import contract, judge_rewards as jr, judgment as jm, rubric
from tests.rewards.judgment_samples import judgment_text

ATTACKS = ["Solution", ":", "Thought process:", "[[A]]", "<answer>[[A]]</answer>", ""]


def test_format_partial_credit_is_the_share_of_checks():
  completions = [
      judgment_text(),                                                        # 6 of 6
      "```json\n" + judgment_text() + "\n```",                                # 5: fenced
      judgment_text(score_A=11, final_verdict="<answer>[[B]]</answer>"),      # 4
      judgment_text(drop=("reasoning",)),                                     # 3: JSON, tags
      "{}",                                                                   # 1: only JSON
      "Solution",                                                             # 0
  ]
  assert jr.judge_format(None, completions) == [1.0, 5 / 6, 4 / 6, 3 / 6, 1 / 6, 0.0]


def test_format_lenient_mode_accepts_the_fence():
  assert jr.judge_format(None, ["```json\n" + judgment_text() + "\n```"], strict=False) == [1.0]


def test_content_direction_contradiction_and_teacher_distance():
  completions = [
      judgment_text(),                                                        # right
      judgment_text(),                                                        # wrong label
      judgment_text(score_A=3, score_B=7),                                    # contradiction
      judgment_text(better="equal", final_verdict="<answer>[[equal]]</answer>"),  # 8 vs 5 "equal"
      judgment_text(),                                                        # right, teacher 6/5
      "Solution",                                                             # unparseable
  ]
  labels = ["A", "B", "A", "equal", "A", "A"]
  teacher = [None, None, None, None, {"A": 6, "B": 5}, None]
  got = jr.judge_content(None, completions, label=labels, teacher_scores=teacher)
  # Teacher penalty: 0.5 * mean(|8 - 6|, |5 - 5|) / 10 = 0.05.
  assert got == pytest.approx([1.0, 0.0, -1.0, -1.0, 0.95, -1.0])
  assert contract.error_counts() == {}


def test_content_wrong_direction_with_distant_scores_reaches_the_minimum():
  text = judgment_text(score_A=10, score_B=0)
  got = jr.judge_content(None, [text], label=["B"], teacher_scores=[(0, 10)],
                         score_distance_weight=1.0)
  assert got == [-1.0]


def test_content_accepts_label_spellings_and_fenced_output():
  text = "```json\n" + judgment_text() + "\n```"
  assert jr.judge_content(None, [text, text], label=["a", " A "]) == [1.0, 1.0]
  assert jr.judge_content(None, [text], label=["A"], strict=True) == [-1.0]


def test_content_bad_label_is_a_counted_data_error():
  got = jr.judge_content(None, [judgment_text()] * 3, label=["A", None, "C"],
                         teacher_scores=[{"A": 11, "B": 0}, None, None])
  assert got == [-1.0, -1.0, -1.0]
  assert contract.error_counts() == {"judge_content": 3}


def test_content_rejects_bad_weight():
  with pytest.raises(ValueError, match="score_distance_weight"):
    jr.judge_content(None, [judgment_text()], label=["A"], score_distance_weight=2.0)


def test_rubric_three_of_five_dimensions():
  addressed_only = "<think>The fluency is good. The relevance is fine. Nothing unsafe here.</think>"
  compared = ("<think>Fluency: A is smoother than B.\n"
              "Relevance: A and B both describe the photo.\n"
              "Safety: neither A nor B is harmful.</think>")
  completions = [judgment_text(reasoning=addressed_only), judgment_text(reasoning=compared)]
  assert jr.judge_rubric(None, completions) == pytest.approx([3 * 0.5 / 5, 3 / 5])


def test_rubric_full_rendered_reasoning_scores_one():
  reasons = {name: "Response A is clearer than Response B." for name in jm.DIMENSION_NAMES}
  assert jr.judge_rubric(None, [jm.render_judgment(6, 2, reasons)]) == [1.0]


def test_rubric_comparison_must_be_on_the_same_line():
  for text in ("Fluency: A is fluent.\nB is not.", "A is long.\nFluency: B is fluent."):
    coverage = rubric.rubric_coverage(text)
    assert coverage["fluency_coherence"] == rubric.DimensionCoverage(addressed=True, compared=False)
  coverage = rubric.rubric_coverage("流畅性：回答A比回答B更流畅。")
  assert coverage["fluency_coherence"] == rubric.DimensionCoverage(addressed=True, compared=True)


def test_rubric_keywords_must_start_a_word():
  assert rubric.rubric_coverage("It is unsafe.")["safety_ethics"].addressed
  assert not rubric.rubric_coverage("The pharmacy opens at nine.")["safety_ethics"].addressed


def test_combined_judge_reward_uses_default_weights():
  completions = [judgment_text(), "{}"] + ATTACKS
  labels = ["A"] * len(completions)
  parts = jr.judge_reward.breakdown(None, completions, label=labels)
  fmt, content, rub = (parts.per_function[k]
                       for k in ("judge_format", "judge_content", "judge_rubric"))
  expected = [0.4 * f + 0.4 * c + 0.2 * r for f, c, r in zip(fmt, content, rub)]
  assert parts.total == pytest.approx(expected)
  assert parts.total[0] == pytest.approx(1.0)
  assert parts.total[1] == pytest.approx(0.4 / 6 - 0.4)
  # Single-token attacks get the minimum: no format credit, content -1, no rubric.
  assert parts.total[2:] == pytest.approx([-0.4] * len(ATTACKS))
  assert jr.judge_reward.reward_range == pytest.approx((-0.4, 1.0))
  assert jr.judge_reward(None, completions, label=labels) == parts.total


def test_make_judge_reward_weights():
  reward = jr.make_judge_reward(format_weight=1.0, content_weight=0.0, rubric_weight=0.0)
  assert reward(None, ["```json\n" + judgment_text() + "\n```"], label=["B"]) == [5 / 6]
