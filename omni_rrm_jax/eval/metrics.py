"""Pairwise-preference metrics, overall and per group (modality, subset).

Plain Python over per-record outcomes, so the scalar RM and the judge report
the same way.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable


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
  """
  label: str
  predicted: str | None
  modality: str = "text"
  subset: str | None = None
  consistent: bool | None = None


def summarize(outcomes: Iterable[Outcome]) -> dict:
  """Accuracy with ties and unparseable outputs counted apart.

  `accuracy` (the headline) counts an unusable output as wrong;
  `accuracy_parsed_only` drops them from the denominator, as some papers do.
  A tie is right only when the gold label is "equal".
  """
  outcomes = list(outcomes)
  n = len(outcomes)
  parsed = [o for o in outcomes if o.predicted is not None]
  correct = sum(o.predicted == o.label for o in parsed)
  consistency = [o.consistent for o in outcomes if o.consistent is not None]
  out = {
      "count": n,
      "accuracy": correct / n if n else 0.0,
      "accuracy_parsed_only": correct / len(parsed) if parsed else 0.0,
      "ties": sum(o.predicted == "equal" for o in parsed),
      "unparseable": n - len(parsed),
  }
  if consistency:
    out["position_consistency"] = sum(consistency) / len(consistency)
  return out


def report(outcomes: Iterable[Outcome]) -> dict:
  """`summarize` overall, per modality and per subset."""
  outcomes = list(outcomes)
  by_modality = collections.defaultdict(list)
  by_subset = collections.defaultdict(list)
  for o in outcomes:
    by_modality[o.modality].append(o)
    if o.subset is not None:
      by_subset[o.subset].append(o)
  return {
      "overall": summarize(outcomes),
      "per_modality": {k: summarize(v) for k, v in sorted(by_modality.items())},
      "per_subset": {k: summarize(v) for k, v in sorted(by_subset.items())},
  }
