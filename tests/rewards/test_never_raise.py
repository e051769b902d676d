"""The never-raise contract: every registered reward, every hostile completion, a finite float."""

from __future__ import annotations

import math

import pytest

from omni_rrm_jax import rewards
from omni_rrm_jax.rewards import contract
from tests.rewards.judgment_samples import judgment_text

MEGABYTE = 1 << 20

ADVERSARIAL = {
    "empty": "",
    "whitespace": " \n\t ",
    "megabyte_text": "the cat sat. " * (MEGABYTE // 13),
    "megabyte_letters": "A B C D E " * (MEGABYTE // 10),
    "lone_surrogate": "\ud800",
    "surrogates_in_json": '{"score_A": "\udfff", "reasoning": "<think>\ud800</think>"}',
    "none": None,
    "bytes_garbage": b"\xff\xfe\x00{\xc3(",
    "int": 12345,
    "chat_messages": [{"role": "assistant", "content": judgment_text()}],
    "chat_parts": [{"role": "assistant", "content": [{"type": "text", "text": judgment_text()}]}],
    "nul_bytes": "\x00" * 1000,
    "fenced_json": "```json\n" + judgment_text() + "\n```",
    "nested_json": '{"score_A": {"score_A": {"score_A": 8}}, "better": [["A"]]}',
    "deep_nesting": '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "unclosed_braces": "{" * MEGABYTE,
    "backslashes": '{"reasoning": "' + "\\" * MEGABYTE,
    "nan_json": judgment_text()[:-1] + ', "extra": NaN}',
    "infinity_score": '{"score_A": Infinity, "score_B": -Infinity}',
    "huge_int": '{"score_A": ' + "9" * 5000 + "}",
    "huge_float": '{"score_A": 1e999}',
    "valid_judgment": judgment_text(),
    "two_judgments": judgment_text() + judgment_text(),
    "solution": "Solution",
    "colon": ":",
    "thought_process": "Thought process:",
    "empty_object": "{}",
    "verdict_only": "[[A]]",
    "answer_verdict_only": "<answer>[[A]]</answer>",
    "many_tags": "<think>" * 50_000 + "</think>" * 50_000 + "<answer>" * 50_000,
    "answer_word_spam": "answer " * 100_000 + "\t" * 100_000,
    "think_answer": "<think>cats</think><answer>The cat sat on the mat</answer>",
}

COLUMNS = {
    "label": "A",
    "teacher_scores": {"A": 8, "B": 5},
    "reference": "B. The cat sat on the mat",
}


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
@pytest.mark.parametrize("name", rewards.REWARDS.names())
def test_every_reward_returns_a_finite_float(name, case):
  fn = rewards.REWARDS.get(name)
  values = fn(["a prompt"], [ADVERSARIAL[case]], **{k: [v] for k, v in COLUMNS.items()})
  assert len(values) == 1
  assert isinstance(values[0], float) and math.isfinite(values[0])
  low, high = fn.reward_range
  assert low - 1e-9 <= values[0] <= high + 1e-9
  # Hostile text is handled by the parsers themselves, not by the error fallback.
  assert contract.error_counts() == {}


@pytest.mark.parametrize("name", rewards.REWARDS.names())
def test_whole_table_in_one_batch(name):
  completions = list(ADVERSARIAL.values())
  columns = {k: [v] * len(completions) for k, v in COLUMNS.items()}
  values = rewards.REWARDS.get(name)(None, completions, **columns)
  assert len(values) == len(completions) and all(math.isfinite(v) for v in values)


@pytest.mark.parametrize("name", rewards.REWARDS.names())
def test_degenerate_batches(name):
  fn = rewards.REWARDS.get(name)
  assert fn(None, []) == []
  assert fn(None, None) == []
  # Missing or misshapen columns are data errors: scored and counted, never raised.
  values = fn(None, ["x", "y"], label=["A"], reference=None)
  assert len(values) == 2 and all(math.isfinite(v) for v in values)
