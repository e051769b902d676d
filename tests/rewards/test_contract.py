"""The shared never-raise plumbing: text coercion, column rows, error counting."""

from __future__ import annotations

import pytest

from omni_rrm_jax.rewards import contract


@pytest.mark.parametrize("completion, text", [
    ("plain", "plain"),
    (None, ""),
    (b"caf\xc3\xa9 \xff", "café \ufffd"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "a"),
    ([{"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "image"},
                                        {"type": "text", "text": "y"}]}], "xy"),
    ([{"role": "assistant", "content": None}], ""),
    (7, "7"),
])
def test_as_text(completion, text):
  assert contract.as_text(completion) == text


def test_columns_are_sliced_per_row_and_scalars_broadcast():
  seen = []

  def score_one(text, row):
    seen.append((text, dict(row)))
    return 1.0

  got = contract.score_samples("probe", 0.0, ["a", "b"], {"label": ["A", "B"], "k": 3}, score_one)
  assert got == [1.0, 1.0]
  assert seen == [("a", {"label": "A", "k": 3}), ("b", {"label": "B", "k": 3})]


def test_misshapen_column_and_errors_are_counted():
  def score_one(text, row):
    if text == "boom":
      raise RuntimeError("boom")
    return float("inf") if text == "inf" else 0.5

  got = contract.score_samples("probe", -1.0, ["ok", "boom", "inf"], {"label": ["A"]}, score_one)
  assert got == [0.5, -1.0, -1.0]
  # One for the column of the wrong length, one exception, one non-finite value.
  assert contract.error_counts() == {"probe": 3}
  contract.reset_error_counts()
  assert contract.error_counts() == {}
