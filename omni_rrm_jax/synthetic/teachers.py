"""Two simulated teachers score each pair; only pairs they agree on are kept.

Real preference data is often labelled by two strong models and filtered to
the pairs where they agree. Here each teacher sees the true scores of a
synthetic pair and reports a noisy `Verdict`:

  scores  = true scores + round(Gaussian(0, score_sd)), clipped to 0-10
  then, on one uniform draw: with `flip_prob` the two scores are swapped,
  with `tie_prob` both become their rounded mean;
  `better` = what the scores imply, except that with `inconsistent_prob` it
  names the other response (or, on tied scores, A or B at random).

`reconcile` (`rewards/agreement.py`, shared with the pipeline that asks real
models) keeps a pair only when both verdicts agree; see there for the rules.

Both teachers share the truth they perturb, so they can both be wrong in the
same way (both flip): such pairs are kept (a real pipeline cannot tell) and
counted as `kept_against_truth`.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, Mapping, Sequence

from omni_rrm_jax.data.records import MAX_SCORE, PreferenceRecord
from omni_rrm_jax.rewards.agreement import (DISAGREEMENT, FILTER_REASONS, INCONSISTENT, KEPT,
                                            TIE, ReconcileStats, Verdict, half_up, reconcile)
from omni_rrm_jax.rewards.judgment import (BETTER_A, BETTER_B, BETTER_EQUAL,
                                           preference_from_scores)

__all__ = ["DISAGREEMENT", "FILTER_REASONS", "INCONSISTENT", "KEPT", "TIE", "ReconcileStats",
           "TeacherNoise", "Verdict", "reconcile", "reconcile_records", "simulate_teacher"]



@dataclasses.dataclass(frozen=True)
class TeacherNoise:
  """How far one simulated teacher strays from the true scores.

  Attributes:
    score_sd: standard deviation of the Gaussian noise added to each score.
    flip_prob: chance the teacher swaps the two scores.
    tie_prob: chance the teacher gives both responses the same score.
    inconsistent_prob: chance the teacher's stated preference contradicts its
      own scores.
  """

  score_sd: float = 0.8
  flip_prob: float = 0.05
  tie_prob: float = 0.025
  inconsistent_prob: float = 0.025

  def __post_init__(self):
    if self.score_sd < 0:
      raise ValueError(f"score_sd must be >= 0, got {self.score_sd}")
    for name in ("flip_prob", "tie_prob", "inconsistent_prob"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
    if self.flip_prob + self.tie_prob > 1.0:
      raise ValueError("flip_prob + tie_prob must be <= 1 (they share one draw)")

  @classmethod
  def from_rate(cls, rate: float, score_sd: float = 0.8) -> TeacherNoise:
    """Noise where a teacher misjudges a pair with probability `rate`: half of those
    misjudgements swap the scores, a quarter tie them, a quarter contradict them."""
    return cls(score_sd=score_sd, flip_prob=rate / 2, tie_prob=rate / 4,
               inconsistent_prob=rate / 4)

  @classmethod
  def from_any(cls, value: TeacherNoise | Mapping[str, float] | float | None) -> TeacherNoise:
    """A `TeacherNoise` from itself, a mapping of its fields (e.g. a config), a
    misjudgement rate (`from_rate`), or None (the defaults: rate 0.1)."""
    if value is None:
      return cls()
    if isinstance(value, cls):
      return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return cls.from_rate(float(value))
    return cls(**dict(value))


def _clip(score: float) -> int:
  return int(min(MAX_SCORE, max(0, round(score))))


def simulate_teacher(true_scores: Mapping[str, int], noise: TeacherNoise,
                     rng: random.Random) -> Verdict:
  """One noisy teacher verdict (see the module docstring).

  Always makes the same number of draws from `rng`, so the verdicts of later
  pairs do not depend on which branch an earlier one took.
  """
  score_a = _clip(true_scores["A"] + rng.gauss(0.0, noise.score_sd))
  score_b = _clip(true_scores["B"] + rng.gauss(0.0, noise.score_sd))
  draw, contradict, side = rng.random(), rng.random(), rng.choice((BETTER_A, BETTER_B))
  if draw < noise.flip_prob:
    score_a, score_b = score_b, score_a
  elif draw < noise.flip_prob + noise.tie_prob:
    score_a = score_b = half_up(score_a + score_b)
  better = preference_from_scores(score_a, score_b)
  if contradict < noise.inconsistent_prob:
    better = {BETTER_A: BETTER_B, BETTER_B: BETTER_A, BETTER_EQUAL: side}[better]
  return Verdict(score_a, score_b, better)


def reconcile_records(
    records: Sequence[PreferenceRecord],
    verdicts: Sequence[tuple[Verdict, Verdict]],
    render_rationale: Callable[[PreferenceRecord, dict[str, int]], str],
    stats: ReconcileStats | None = None,
) -> tuple[list[PreferenceRecord], ReconcileStats]:
  """Keeps the records both teachers agree on, with reconciled scores.

  Args:
    records: candidate pairs; `label` holds the true preference (used only to
      count `kept_against_truth`).
    verdicts: the two teachers' verdicts, one tuple per record.
    render_rationale: `(record, reconciled scores) -> rationale` for a kept
      record.
    stats: counts to add to; a fresh `ReconcileStats` when None.

  Returns:
    (kept records, in input order, with `label`, `scores` and `rationale` from
    the reconciled scores; the stats).
  """
  if len(records) != len(verdicts):
    raise ValueError(f"{len(records)} records but {len(verdicts)} verdict pairs")
  stats = ReconcileStats() if stats is None else stats
  kept = []
  for record, (first, second) in zip(records, verdicts):
    scores, outcome = reconcile(first, second)
    if scores is None:
      stats.add(outcome, record.modality)
      continue
    label = preference_from_scores(scores["A"], scores["B"])
    stats.add(outcome, record.modality, against_truth=label != record.label)
    kept.append(dataclasses.replace(record, label=label, scores=scores,
                                    rationale=render_rationale(record, scores)))
  return kept, stats
