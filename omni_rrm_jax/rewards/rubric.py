"""Which rubric dimensions a judge's reasoning addresses, and whether it compares A and B.

A dimension is *addressed* when one of its keywords (see
`judgment.DIMENSIONS`) starts a word in the reasoning. It is *compared* when,
near one of those keyword hits, the reasoning mentions both responses: a
standalone "A" and a standalone "B" (letters not inside a longer ASCII word, so
"Response A", "A's", "[[B]]" and "回答A" count) within `window` characters of
the keyword and on the same line. The same-line limit keeps one dimension's
comparison from crediting the next line's dimension.

This is a heuristic a judge could game by sprinkling keywords; it is meant to
be a small share of the reward, next to the teacher-grounded content reward.
All scans are linear in the text (bisection over precomputed positions).
"""

from __future__ import annotations

import bisect
import dataclasses
import re

from omni_rrm_jax.rewards.judgment import DIMENSIONS, Dimension

DEFAULT_WINDOW = 120

_MENTION_A = re.compile(r"(?<![A-Za-z0-9_])A(?![A-Za-z0-9_])")
_MENTION_B = re.compile(r"(?<![A-Za-z0-9_])B(?![A-Za-z0-9_])")


def _keyword_pattern(dimension: Dimension) -> re.Pattern[str]:
  parts = []
  for keyword in dimension.keywords:
    escaped = re.escape(keyword)
    # ASCII keywords must start a word ("unsafe" is listed separately from "safe").
    parts.append(rf"(?<![a-z0-9]){escaped}" if keyword.isascii() else escaped)
  return re.compile("|".join(parts), re.IGNORECASE)


_KEYWORD_PATTERNS = {d.name: _keyword_pattern(d) for d in DIMENSIONS}


@dataclasses.dataclass(frozen=True)
class DimensionCoverage:
  """How the reasoning treats one rubric dimension."""

  addressed: bool
  compared: bool


def _has_between(positions: list[int], lo: int, hi: int) -> bool:
  i = bisect.bisect_left(positions, lo)
  return i < len(positions) and positions[i] < hi


def rubric_coverage(reasoning: str, *,
                    window: int = DEFAULT_WINDOW) -> dict[str, DimensionCoverage]:
  """Finds, per rubric dimension, whether the reasoning addresses it and compares A with B on it.

  Args:
    reasoning: the judge's reasoning (with or without its think tags).
    window: how many characters either side of a keyword to look for A and B.

  Returns:
    `{dimension name: DimensionCoverage}` for the five dimensions, in rubric order.
  """
  mentions_a = [m.start() for m in _MENTION_A.finditer(reasoning)]
  mentions_b = [m.start() for m in _MENTION_B.finditer(reasoning)]
  newlines = [i for i, char in enumerate(reasoning) if char == "\n"]
  coverage = {}
  for dimension in DIMENSIONS:
    addressed = compared = False
    for hit in _KEYWORD_PATTERNS[dimension.name].finditer(reasoning):
      addressed = True
      line = bisect.bisect_left(newlines, hit.start())
      line_start = newlines[line - 1] + 1 if line > 0 else 0
      line_end = newlines[line] if line < len(newlines) else len(reasoning)
      lo = max(line_start, hit.start() - window)
      hi = min(line_end, hit.end() + window)
      if _has_between(mentions_a, lo, hi) and _has_between(mentions_b, lo, hi):
        compared = True
        break
    coverage[dimension.name] = DimensionCoverage(addressed, compared)
  return coverage


def rubric_score(reasoning: str, *, window: int = DEFAULT_WINDOW) -> float:
  """Scores rubric coverage in [0, 1].

  Each of the five dimensions is worth 1/5: half for addressing it, half for
  comparing A and B on it. So reasoning that addresses 3 dimensions and compares
  the responses on 2 of them scores (3 * 0.5 + 2 * 0.5) / 5 = 0.5.

  Args:
    reasoning: the judge's reasoning.
    window: see `rubric_coverage`.

  Returns:
    The score in [0, 1].
  """
  coverage = rubric_coverage(reasoning, window=window).values()
  return sum(0.5 * c.addressed + 0.5 * c.compared for c in coverage) / len(DIMENSIONS)
