"""The judgment format: exact parser verdicts, strict vs lenient, bounds, render round trip."""

from __future__ import annotations

import json
import time

import pytest

from omni_rrm_jax.rewards import judgment as jm
from omni_rrm_jax.rewards.rubric import rubric_score
from tests.rewards.judgment_samples import REASONING, judgment_text


def test_valid_judgment_parses_to_typed_fields():
  result = jm.parse_judgment(judgment_text())
  assert result.ok and result.errors == () and result.error is None
  assert result.judgment == jm.Judgment(8, 5, "A", REASONING, "<answer>[[A]]</answer>")
  assert result.judgment.think == REASONING[len("<think>"):-len("</think>")]
  assert result.judgment.scores_agree
  assert result.checks.passed == 6 and result.checks.fraction == 1.0


@pytest.mark.parametrize("text, error", [
    ("", "no JSON object found"),
    ("Solution", "no JSON object found"),
    ("[[A]]", "no JSON object found"),
    ('{"score_A": 8', "unterminated JSON object"),
    ('{"score_A": 8,}', "invalid JSON: Expecting property name enclosed in double quotes"),
    ('{"score_A": NaN}', "invalid JSON: NaN is not allowed"),
    ('{"score_A": -Infinity}', "invalid JSON: -Infinity is not allowed"),
    ("{}", "missing keys: score_A, score_B, better, reasoning, final_verdict"),
    (judgment_text(drop=("reasoning", "better")), "missing keys: better, reasoning"),
    (judgment_text(note="x"), "extra keys: note"),
    (judgment_text(score_A=11), "score_A must be an integer 0-10, got 11"),
    (judgment_text(score_B=-1), "score_B must be an integer 0-10, got -1"),
    (judgment_text(score_A=True), "score_A must be an integer 0-10, got true"),
    (judgment_text(score_A=7.0), "score_A must be an integer 0-10, got 7.0"),
    (judgment_text(score_A="8"), 'score_A must be an integer 0-10, got "8"'),
    (judgment_text(better="a"), 'better must be one of A, B, equal, got "a"'),
    (judgment_text(reasoning=["x"]), 'reasoning must be a string, got ["x"]'),
    (judgment_text(reasoning="no tags"),
     "reasoning must be a single non-empty <think>...</think> block"),
    (judgment_text(reasoning="<think> </think>"),
     "reasoning must be a single non-empty <think>...</think> block"),
    (judgment_text(reasoning="<think>a</think><think>b</think>"),
     "reasoning must be a single non-empty <think>...</think> block"),
    (judgment_text(final_verdict="[[A]]"),
     "final_verdict must be one of <answer>[[A]]</answer>, <answer>[[B]]</answer>, "
     '<answer>[[equal]]</answer>, got "[[A]]"'),
    (judgment_text(final_verdict="<answer>[[B]]</answer>"), "final_verdict disagrees with better"),
    ("```json\n" + judgment_text() + "\n```", "text outside the JSON object"),
    ("Here it is: " + judgment_text(), "text outside the JSON object"),
    (judgment_text() + judgment_text(), "text outside the JSON object"),
    (None, "judgment must be a string, got NoneType"),
    (12, "judgment must be a string, got int"),
])
def test_exact_error_reason(text, error):
  result = jm.parse_judgment(text)
  assert not result.ok and result.judgment is None
  assert result.error == error


def test_duplicate_keys_are_rejected():
  text = judgment_text()[:-1] + ', "score_A": 9}'
  assert jm.parse_judgment(text).errors == ("duplicate keys: score_A",)


def test_all_errors_are_listed_most_fundamental_first():
  result = jm.parse_judgment(judgment_text(score_A=11, better="C", note=1))
  assert result.errors == (
      "extra keys: note",
      "score_A must be an integer 0-10, got 11",
      'better must be one of A, B, equal, got "C"',
  )


def test_checks_are_computed_on_the_object_even_when_invalid():
  # Valid JSON and keys, think and verdict tags; bad score and a disagreeing verdict: 4 of 6.
  checks = jm.parse_judgment(
      judgment_text(score_A=11, final_verdict="<answer>[[B]]</answer>")).checks
  assert checks == jm.FormatChecks(json_object=True, exact_keys=True, valid_values=False,
                                   think_tag=True, verdict_tag=True, verdict_agrees=False)
  assert checks.passed == 4


def test_contradicting_scores_parse_but_are_flagged():
  result = jm.parse_judgment(judgment_text(score_A=3, score_B=7))
  assert result.ok and not result.judgment.scores_agree
  equal = jm.parse_judgment(
      judgment_text(better="equal", final_verdict="<answer>[[equal]]</answer>"))
  assert equal.ok and not equal.judgment.scores_agree  # 8 vs 5 is not a tie.


@pytest.mark.parametrize("wrapped", [
    "```json\n{j}\n```",
    "Sure. Here is my judgment:\n{j}\nThanks!",
    "{j}\n{j}",
    "Comparing {{A}} and {{B}} first. {j}",  # an undecodable {...} before the real one.
])
def test_lenient_mode_takes_the_first_object_that_decodes(wrapped):
  text = wrapped.format(j=judgment_text())
  assert not jm.parse_judgment(text, strict=True).ok
  lenient = jm.parse_judgment(text, strict=False)
  assert lenient.ok and lenient.judgment.score_a == 8


def test_strict_mode_allows_surrounding_whitespace():
  assert jm.parse_judgment("\n  " + judgment_text() + "\n").ok


def test_braces_and_quotes_inside_strings_do_not_confuse_the_scanner():
  reasoning = '<think>A writes "}{" and \\"quotes\\"; B writes {nothing}.</think>'
  result = jm.parse_judgment("note } \" " + judgment_text(reasoning=reasoning), strict=False)
  assert result.ok and result.judgment.reasoning == reasoning


def test_input_is_capped_at_64_kib():
  padding = " " * jm.MAX_JUDGMENT_CHARS
  assert jm.parse_judgment(padding + judgment_text(), strict=False).error == (
      "no JSON object found in the first 65536 characters")
  assert jm.parse_judgment(judgment_text() + padding, strict=False).ok
  assert jm.parse_judgment(judgment_text() + padding, strict=True).error == (
      "judgment longer than 65536 characters")


def test_parse_is_fast_on_hostile_megabytes():
  hostile = ["{" * 1_000_000, '{"a": "' + "\\" * 1_000_000, "[" * 1_000_000,
             '{"a":' + "[" * 50_000 + "]" * 50_000 + "}", "}{" * 500_000]
  start = time.perf_counter()
  for text in hostile:
    for strict in (True, False):
      assert not jm.parse_judgment(text, strict=strict).ok
  assert time.perf_counter() - start < 2.0


def test_bytes_and_surrogates_never_raise():
  assert jm.parse_judgment(b"\xff\xfe" + judgment_text().encode(), strict=False).ok
  assert jm.parse_judgment("\ud800").error == "no JSON object found"
  assert jm.parse_judgment(judgment_text(reasoning="<think>A \ud800 B</think>")).ok


def test_render_round_trips():
  reasons = {name: f"Response A beats Response B on {name}." for name in jm.DIMENSION_NAMES}
  text = jm.render_judgment(7, 7, reasons)
  result = jm.parse_judgment(text)
  assert result.ok
  judgment = result.judgment
  assert (judgment.score_a, judgment.score_b, judgment.better) == (7, 7, "equal")
  assert result.judgment.final_verdict == "<answer>[[equal]]</answer>"
  lines = result.judgment.think.split("\n")
  assert lines[0] == "1. Fluency and coherence: Response A beats Response B on fluency_coherence."
  assert [line.split(".")[0] for line in lines] == ["1", "2", "3", "4", "5"]


def test_render_short_headings_round_trip_and_keep_the_rubric():
  reasons = {name: "A is better than B." for name in jm.DIMENSION_NAMES}
  text = jm.render_judgment(8, 3, reasons, short_headings=True)
  result = jm.parse_judgment(text)
  assert result.ok and result.judgment.better == "A"
  lines = result.judgment.think.split("\n")
  assert lines == [f"{i}. {d.short}: A is better than B." for i, d in enumerate(jm.DIMENSIONS, 1)]
  assert len(text) < len(jm.render_judgment(8, 3, reasons))
  # Each one-word heading still names its dimension for the rubric reward.
  assert rubric_score(result.judgment.reasoning) == 1.0


def test_render_keeps_unicode_and_collapses_whitespace():
  reasons = {name: "回答A更好,\n 回答B较差" for name in jm.DIMENSION_NAMES}
  text = jm.render_judgment(9, 2, reasons, better="A")
  assert "回答A" in text
  assert json.loads(text)["reasoning"].count("\n") == 4
  assert jm.parse_judgment(text).judgment.better == "A"


@pytest.mark.parametrize("kwargs, message", [
    (dict(score_a=11, score_b=2), "score_a must be an integer 0-10"),
    (dict(score_a=True, score_b=2), "score_a must be an integer 0-10"),
    (dict(score_a=3, score_b=2, better="B"), "contradicts the scores 3 vs 2"),
    (dict(score_a=3, score_b=2, better="tie"), "better must be one of"),
])
def test_render_rejects_bad_scores(kwargs, message):
  reasons = {name: "x" for name in jm.DIMENSION_NAMES}
  with pytest.raises(ValueError, match=message):
    jm.render_judgment(reasoning_by_dimension=reasons, **kwargs)


def test_render_rejects_bad_dimensions():
  reasons = {name: "x" for name in jm.DIMENSION_NAMES}
  with pytest.raises(ValueError, match="missing dimensions: safety_ethics"):
    jm.render_judgment(5, 4, {k: v for k, v in reasons.items() if k != "safety_ethics"})
  with pytest.raises(ValueError, match="unknown dimensions: style"):
    jm.render_judgment(5, 4, {**reasons, "style": "x"})
  with pytest.raises(ValueError, match="must not contain think tags"):
    jm.render_judgment(5, 4, {**reasons, "relevance": "</think>"})


def test_constants_describe_the_format():
  assert jm.JUDGMENT_KEYS == ("score_A", "score_B", "better", "reasoning", "final_verdict")
  assert jm.VERDICTS == {"A": "<answer>[[A]]</answer>", "B": "<answer>[[B]]</answer>",
                         "equal": "<answer>[[equal]]</answer>"}
  assert len(jm.DIMENSIONS) == 5 and all(d.keywords for d in jm.DIMENSIONS)
