"""Two-teacher reconciliation: which pairs survive, their scores, and the counts."""

from __future__ import annotations

import json
import random

import pytest

from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.synthetic.teachers import (FILTER_REASONS, ReconcileStats, TeacherNoise, Verdict,
                                        reconcile, reconcile_records, simulate_teacher)

V = Verdict

# (first, second, outcome, reconciled scores) for hand-built cases.
CASES = [
    (V(8, 2, "A"), V(9, 3, "A"), "kept", {"A": 9, "B": 3}),   # 8.5 -> 9, 2.5 -> 3 (half up)
    (V(2, 7, "B"), V(1, 9, "B"), "kept", {"A": 2, "B": 8}),
    # Half up keeps a one-point gap that round-half-even would tie (6.5 / 5.5 -> 6 / 6).
    (V(7, 6, "A"), V(6, 5, "A"), "kept", {"A": 7, "B": 6}),
    (V(8, 2, "A"), V(2, 8, "B"), "disagreement", None),
    (V(6, 5, "A"), V(4, 5, "B"), "disagreement", None),
    (V(5, 5, "equal"), V(8, 2, "A"), "tie", None),
    (V(8, 2, "A"), V(4, 4, "equal"), "tie", None),
    (V(8, 2, "B"), V(8, 2, "A"), "inconsistent", None),        # says B, scores say A
    (V(3, 3, "A"), V(2, 7, "B"), "inconsistent", None),        # a tie stated as A
    (V(5, 5, "A"), V(5, 5, "equal"), "inconsistent", None),    # inconsistency outranks tie
    (V(2, 8, "A"), V(8, 2, "B"), "inconsistent", None),        # and disagreement
]


@pytest.mark.parametrize("first,second,outcome,scores", CASES)
def test_reconcile_hand_built(first, second, outcome, scores):
  assert reconcile(first, second) == (scores, outcome)
  assert reconcile(second, first) == (scores, outcome)  # symmetric in the teachers


def _record(i: int, label: str = "A") -> PreferenceRecord:
  return PreferenceRecord(id=f"r{i}", prompt=f"q{i}", response_a="yes", response_b="no",
                          label=label, modality="image" if i % 2 else "text",
                          media={"images": [f"i{i}.png"] if i % 2 else [], "video": None,
                                 "audio": None},
                          scores={"A": 9, "B": 1} if label == "A" else {"A": 1, "B": 9})


def test_reconcile_records_drops_exactly_the_disputed_pairs():
  records = [_record(i) for i in range(len(CASES))]
  verdicts = [(first, second) for first, second, _, _ in CASES]
  rendered = []
  render = lambda record, scores: rendered.append(record.id) or json.dumps(scores)  # noqa: E731
  kept, stats = reconcile_records(records, verdicts, render)

  expected = [(f"r{i}", case[3]) for i, case in enumerate(CASES) if case[2] == "kept"]
  assert [(r.id, r.scores) for r in kept] == expected
  assert rendered == [rid for rid, _ in expected]  # a rationale only for kept pairs
  for r in kept:
    assert json.loads(r.rationale) == r.scores
    assert r.label == ("A" if r.scores["A"] > r.scores["B"] else "B")
  assert stats.generated == len(CASES) and stats.kept == len(expected)
  assert stats.filtered == {"inconsistent": 4, "tie": 2, "disagreement": 2}
  assert stats.generated == stats.kept + sum(stats.filtered.values())
  assert stats.by_kind == {"text": {"generated": 6, "kept": 2},
                           "image": {"generated": 5, "kept": 1}}
  # Case 1 (index 1) keeps B over a record whose truth is A.
  assert stats.kept_against_truth == 1 and kept[1].label == "B"


def test_stats_accumulate_across_calls_and_reject_unknown_outcomes():
  stats = ReconcileStats()
  reconcile_records([_record(0)], [(V(8, 2, "A"), V(9, 1, "A"))], lambda r, s: "x", stats)
  reconcile_records([_record(2)], [(V(8, 2, "A"), V(1, 9, "B"))], lambda r, s: "x", stats)
  assert (stats.generated, stats.kept, stats.filtered["disagreement"]) == (2, 1, 1)
  assert set(stats.as_dict()["filtered"]) == set(FILTER_REASONS)
  with pytest.raises(ValueError, match="unknown outcome"):
    stats.add("maybe", "text")
  with pytest.raises(ValueError, match="2 records but 1 verdict"):
    reconcile_records([_record(0), _record(1)], [(V(8, 2, "A"), V(8, 2, "A"))], lambda r, s: "")


def test_simulated_teacher_noise_modes():
  truth = {"A": 8, "B": 3}
  rng = random.Random(0)
  exact = TeacherNoise(score_sd=0.0, flip_prob=0.0, tie_prob=0.0, inconsistent_prob=0.0)
  assert simulate_teacher(truth, exact, rng) == V(8, 3, "A")
  flip = TeacherNoise(score_sd=0.0, flip_prob=1.0, tie_prob=0.0, inconsistent_prob=0.0)
  assert simulate_teacher(truth, flip, rng) == V(3, 8, "B")
  tie = TeacherNoise(score_sd=0.0, flip_prob=0.0, tie_prob=1.0, inconsistent_prob=0.0)
  assert simulate_teacher(truth, tie, rng) == V(6, 6, "equal")  # (8 + 3) / 2 rounded up
  liar = TeacherNoise(score_sd=0.0, flip_prob=0.0, tie_prob=0.0, inconsistent_prob=1.0)
  assert simulate_teacher(truth, liar, rng) == V(8, 3, "B")
  assert simulate_teacher({"A": 10, "B": 0}, TeacherNoise(score_sd=5.0), rng).score_a <= 10


def test_simulated_teacher_draw_count_is_fixed():
  # Later pairs' noise must not depend on which branch an earlier pair took.
  after = []
  for noise in (TeacherNoise(flip_prob=1.0, tie_prob=0.0),
                TeacherNoise(tie_prob=1.0, flip_prob=0.0),
                TeacherNoise(inconsistent_prob=1.0), TeacherNoise(score_sd=0.0)):
    rng = random.Random(3)
    simulate_teacher({"A": 7, "B": 2}, noise, rng)
    after.append(rng.random())
  assert len(set(after)) == 1


def test_simulated_noise_rates():
  noise = TeacherNoise(score_sd=0.0, flip_prob=0.2, tie_prob=0.1, inconsistent_prob=0.0)
  rng = random.Random(1)
  verdicts = [simulate_teacher({"A": 9, "B": 2}, noise, rng) for _ in range(4000)]
  flips = sum(v.better == "B" for v in verdicts) / len(verdicts)
  ties = sum(v.better == "equal" for v in verdicts) / len(verdicts)
  assert abs(flips - 0.2) < 0.03 and abs(ties - 0.1) < 0.03


def test_teacher_noise_validation_and_from_any():
  with pytest.raises(ValueError, match="flip_prob"):
    TeacherNoise(flip_prob=1.5)
  with pytest.raises(ValueError, match="share one draw"):
    TeacherNoise(flip_prob=0.6, tie_prob=0.6)
  with pytest.raises(ValueError, match="score_sd"):
    TeacherNoise(score_sd=-1.0)
  assert TeacherNoise.from_any(None) == TeacherNoise()
  assert TeacherNoise.from_any({"tie_prob": 0.5}).tie_prob == 0.5
  rate = TeacherNoise.from_any(0.2)
  assert (rate.flip_prob, rate.tie_prob, rate.inconsistent_prob) == (0.1, 0.05, 0.05)
  with pytest.raises(TypeError):
    TeacherNoise.from_any({"tie_probability": 0.5})
