"""Pairwise-preference metrics, overall and per group (modality, subset).

Plain Python over per-record outcomes, so the scalar RM and the judge report
the same way. Ties are counted both ways the field reports them:

  accuracy                 every record; a predicted tie ("equal": a scalar RM
                           whose |reward A - reward B| is below the tie margin,
                           a judge that says so) is right only on a gold tie.
  accuracy_without_ties    records whose gold label is not a tie, each
                           predicted by the sign of the reward difference
                           alone (a judge's tie stays a tie, so it is wrong).

Each accuracy has a percentile bootstrap 95% interval (`*_ci95`).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable

from omni_rrm_jax.eval.bootstrap import DEFAULT_SAMPLES, mean_interval


@dataclasses.dataclass(frozen=True)
class Outcome:
  """One evaluated record.

  Attributes:
    label: the gold label, "A", "B" or "equal".
    predicted: "A", "B", "equal" (a tie), or None when the output was unusable
      (an unparseable judgment).
    modality: the record's modality.
    subset: the record's subset (source split), or None.
    consistent: for a judge evaluated in both A/B orders, whether the two
      verdicts agree once mapped back; None when not measured.
    predicted_no_tie: the prediction without the tie margin (a scalar RM's
      sign of reward A - reward B); None: the same as `predicted`.
    rewards: a scalar RM's (reward A, reward B), or None.
    record_id: the record's id.
    group: the record's `group` (pairs of one many-candidate item), or None.
  """
  label: str
  predicted: str | None
  modality: str = "text"
  subset: str | None = None
  consistent: bool | None = None
  predicted_no_tie: str | None = None
  rewards: tuple[float, float] | None = None
  record_id: str | None = None
  group: dict | None = None

  @property
  def correct(self) -> bool:
    """Right with ties counted: the prediction equals the gold label."""
    return self.predicted is not None and self.predicted == self.label

  @property
  def correct_no_tie(self) -> bool:
    """Right by the margin-free prediction (meaningful on non-tie gold labels)."""
    pred = self.predicted_no_tie if self.predicted_no_tie is not None else self.predicted
    return pred is not None and pred == self.label


def predict(reward_a: float, reward_b: float, tie_margin: float = 0.0) -> str:
  """A scalar RM's verdict: "equal" when |reward_a - reward_b| < tie_margin or
  the rewards are equal, else the higher one's side."""
  if reward_a == reward_b or abs(reward_a - reward_b) < tie_margin:
    return "equal"
  return "A" if reward_a > reward_b else "B"


def summarize(outcomes: Iterable[Outcome], *, ci_samples: int = DEFAULT_SAMPLES,
              ci_seed: int = 0) -> dict:
  """Accuracy with and without ties, with bootstrap intervals, and the failures.

  `accuracy` (the headline) counts an unusable output as wrong;
  `accuracy_parsed_only` drops them from the denominator, as some papers do;
  `parse_failure_rate` is their share. `ci_samples` resamples seeded by
  `ci_seed` give the `*_ci95` intervals (0: none).
  """
  outcomes = list(outcomes)
  n = len(outcomes)
  parsed = [o for o in outcomes if o.predicted is not None]
  right_n = [float(o.correct) for o in outcomes]
  decided = [o for o in outcomes if o.label != "equal"]
  right_no_tie = [float(o.correct_no_tie) for o in decided]
  consistency = [o.consistent for o in outcomes if o.consistent is not None]
  interval = (lambda v: mean_interval(v, num_samples=ci_samples, seed=ci_seed)) if (
      ci_samples) else (lambda v: None)
  out = {
      "count": n,
      "accuracy": sum(right_n) / n if n else 0.0,
      "accuracy_ci95": interval(right_n),
      "accuracy_parsed_only": sum(right_n) / len(parsed) if parsed else 0.0,
      "accuracy_without_ties": sum(right_no_tie) / len(decided) if decided else 0.0,
      "accuracy_without_ties_ci95": interval(right_no_tie),
      "count_without_ties": len(decided),
      "ties": sum(o.predicted == "equal" for o in parsed),
      "gold_ties": n - len(decided),
      "unparseable": n - len(parsed),
      "parse_failure_rate": (n - len(parsed)) / n if n else 0.0,
  }
  if consistency:
    out["position_consistency"] = sum(consistency) / len(consistency)
  return out


def report(outcomes: Iterable[Outcome], *, ci_samples: int = DEFAULT_SAMPLES,
           ci_seed: int = 0) -> dict:
  """`summarize` overall, per modality and per subset."""
  outcomes = list(outcomes)
  by_modality = collections.defaultdict(list)
  by_subset = collections.defaultdict(list)
  for o in outcomes:
    by_modality[o.modality].append(o)
    if o.subset is not None:
      by_subset[o.subset].append(o)
  kw = dict(ci_samples=ci_samples, ci_seed=ci_seed)
  return {
      "overall": summarize(outcomes, **kw),
      "per_modality": {k: summarize(v, **kw) for k, v in sorted(by_modality.items())},
      "per_subset": {k: summarize(v, **kw) for k, v in sorted(by_subset.items())},
  }
