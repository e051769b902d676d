"""When two judges agree on a pair: the verdicts they give and how they are reconciled.

Preference data is often labelled by two strong models and kept only where
they agree. A `Verdict` is one judge's scores for a pair and the response it
says is better; `reconcile` keeps a pair only when both verdicts are
consistent with their own scores, neither is a tie, and both prefer the same
response. Reasons for dropping a pair are checked in that order
("inconsistent", "tie", "disagreement"), so each dropped pair counts under
exactly one. A kept pair gets each response's mean score rounded half up;
two strict preferences for the same side differ by at least 1 on average,
and half-up rounding keeps that gap, so the reconciled scores imply the
agreed preference.

The simulated teachers of the main job (`synthetic/teachers.py`) and the
construction pipeline that asks real models (`construct/`) both use it.
"""

from __future__ import annotations

import dataclasses

from omni_rrm_jax.rewards.judgment import BETTER_EQUAL, preference_from_scores

KEPT = "kept"
INCONSISTENT = "inconsistent"
TIE = "tie"
DISAGREEMENT = "disagreement"
FILTER_REASONS = (INCONSISTENT, TIE, DISAGREEMENT)


@dataclasses.dataclass(frozen=True)
class Verdict:
  """One teacher's scores for a pair and the response it says is better."""

  score_a: int
  score_b: int
  better: str

  @property
  def consistent(self) -> bool:
    """Whether `better` is what the scores imply (ties <-> "equal")."""
    return preference_from_scores(self.score_a, self.score_b) == self.better


def half_up(total: int) -> int:
  """round(total / 2) with halves rounded up (Python's round() goes to even)."""
  return (total + 1) // 2


def reconcile(first: Verdict, second: Verdict) -> tuple[dict[str, int] | None, str]:
  """(reconciled scores, "kept"), or (None, the reason the pair is dropped)."""
  if not (first.consistent and second.consistent):
    return None, INCONSISTENT
  if BETTER_EQUAL in (first.better, second.better):
    return None, TIE
  if first.better != second.better:
    return None, DISAGREEMENT
  scores = {"A": half_up(first.score_a + second.score_a),
            "B": half_up(first.score_b + second.score_b)}
  assert preference_from_scores(scores["A"], scores["B"]) == first.better, (first, second)
  return scores, KEPT


@dataclasses.dataclass
class ReconcileStats:
  """Counts of one reconciliation run; `generated == kept + sum(filtered)`.

  Attributes:
    generated: pairs the teachers scored.
    kept: pairs kept.
    filtered: dropped pairs by reason, every reason in `FILTER_REASONS` present.
    kept_against_truth: kept pairs whose agreed preference is the wrong answer.
    by_kind: {modality: {"generated": n, "kept": n}}.
  """

  generated: int = 0
  kept: int = 0
  filtered: dict[str, int] = dataclasses.field(
      default_factory=lambda: dict.fromkeys(FILTER_REASONS, 0))
  kept_against_truth: int = 0
  by_kind: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

  def add(self, outcome: str, kind: str, against_truth: bool = False) -> None:
    """Counts one pair: `outcome` is "kept" or one of `FILTER_REASONS`."""
    if outcome != KEPT and outcome not in FILTER_REASONS:
      raise ValueError(f"unknown outcome {outcome!r}; known: {KEPT}, {', '.join(FILTER_REASONS)}")
    counts = self.by_kind.setdefault(kind, {"generated": 0, "kept": 0})
    self.generated += 1
    counts["generated"] += 1
    if outcome == KEPT:
      self.kept += 1
      counts["kept"] += 1
      self.kept_against_truth += int(against_truth)
    else:
      self.filtered[outcome] += 1

  def as_dict(self) -> dict:
    """A JSON-ready copy."""
    return dataclasses.asdict(self)


