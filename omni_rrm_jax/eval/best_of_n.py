"""Best-of-N: pick one of N candidates per prompt, and how good the picks are.

Plain Python and NumPy. A scalar RM picks its highest-scoring candidate (the
first of equal scores). A judge runs a knockout: each round pairs the
remaining candidates (the last one of an odd number passes), and every match
is judged in both orders (`Match`); the candidate with more votes goes on (a
verdict for a side is a vote, a tie half a vote each, an unusable judgment
none), and equal votes keep the candidate listed first. All items' matches of
a round are judged together, so the judge sees full batches.

The report compares the picked candidates' quality with two references on the
same items: random choice (the mean quality of the item's candidates, what a
uniform pick scores on average) and the oracle (the best quality there). Each
mean and the gains over random have percentile bootstrap 95% intervals over
items (`bootstrap.py`; the gain's interval is paired: one resample of items for
both).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Sequence

import numpy as np

from omni_rrm_jax.eval.bootstrap import DEFAULT_SAMPLES, mean_interval


def pick_by_scores(scores_n: Sequence[float]) -> int:
  """The index of the highest score (the first of equal ones)."""
  return int(np.argmax(np.asarray(scores_n, dtype=np.float64)))


@dataclasses.dataclass(frozen=True)
class Match:
  """One knockout match: candidates `first` and `second` of item `item`."""
  item: int
  first: int
  second: int


def votes(forward: str | None, swapped: str | None) -> tuple[float, float]:
  """(votes for the first, for the second) from the verdicts of both orders.

  `forward` judged (first as A, second as B); `swapped` judged the reverse, so
  its "A" is the second candidate. "equal" gives half a vote each; None none.
  """
  first = second = 0.0
  for verdict, a_is_first in ((forward, True), (swapped, False)):
    if verdict == "equal":
      first, second = first + 0.5, second + 0.5
    elif verdict in ("A", "B"):
      if (verdict == "A") == a_is_first:
        first += 1
      else:
        second += 1
  return first, second


def knockout(num_candidates: Sequence[int],
             judge: Callable[[list[Match]], list[tuple[str | None, str | None]]]
             ) -> tuple[list[int], int]:
  """The knockout winner of every item.

  Args:
    num_candidates: N per item.
    judge: verdicts (forward, swapped) for a round's matches, in order.

  Returns:
    (winner index per item, number of matches judged).
  """
  alive = [list(range(n)) for n in num_candidates]
  judged = 0
  while any(len(a) > 1 for a in alive):
    matches = [Match(i, a[k], a[k + 1]) for i, a in enumerate(alive)
               for k in range(0, len(a) - 1, 2)]
    verdicts = judge(matches)
    if len(verdicts) != len(matches):
      raise ValueError(f"the judge returned {len(verdicts)} verdicts for {len(matches)} matches")
    judged += len(matches)
    winners = collections.defaultdict(list)
    for match, (forward, swapped) in zip(matches, verdicts):
      v_first, v_second = votes(forward, swapped)
      winners[match.item].append(match.second if v_second > v_first else match.first)
    alive = [winners[i] + ([a[-1]] if len(a) % 2 else []) if len(a) > 1 else a
             for i, a in enumerate(alive)]
  return [a[0] for a in alive], judged


def _summary(picked_n, random_n, oracle_n, ci_samples, ci_seed) -> dict:
  interval = (lambda v: mean_interval(v, num_samples=ci_samples, seed=ci_seed)) if (
      ci_samples) else (lambda v: None)
  picked_n, random_n, oracle_n = (np.asarray(x, dtype=np.float64)
                                  for x in (picked_n, random_n, oracle_n))
  gain_n = picked_n - random_n
  headroom_n = oracle_n - random_n
  return {
      "items": int(picked_n.size),
      "picked_quality": float(picked_n.mean()), "picked_quality_ci95": interval(picked_n),
      "random_quality": float(random_n.mean()), "random_quality_ci95": interval(random_n),
      "oracle_quality": float(oracle_n.mean()), "oracle_quality_ci95": interval(oracle_n),
      "gain_over_random": float(gain_n.mean()), "gain_over_random_ci95": interval(gain_n),
      # The share of the random-to-oracle gap the picker closes (None: no gap).
      "gap_closed": (float(gain_n.sum() / headroom_n.sum()) if headroom_n.sum() > 0 else None),
  }


def bon_report(items, picks: Sequence[int], *, ci_samples: int = DEFAULT_SAMPLES,
               ci_seed: int = 0) -> dict:
  """Picked vs random vs oracle quality, overall and per subset, over the items
  with quality labels (`data.bon_items.BonItem`); `labelled` counts them."""
  rows = collections.defaultdict(list)
  for item, pick in zip(items, picks):
    if item.quality is None:
      continue
    quality = np.asarray(item.quality, dtype=np.float64)
    row = (quality[pick], quality.mean(), quality.max())
    rows[None].append(row)
    if item.subset is not None:
      rows[item.subset].append(row)
  out = {"items": len(items), "labelled": len(rows[None])}
  if rows[None]:
    out["overall"] = _summary(*zip(*rows[None]), ci_samples, ci_seed)
    out["per_subset"] = {s: _summary(*zip(*r), ci_samples, ci_seed)
                         for s, r in sorted(rows.items(), key=lambda kv: str(kv[0]))
                         if s is not None}
  return out
