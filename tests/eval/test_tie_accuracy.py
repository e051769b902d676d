"""Tie-aware accuracy on a hand example: a scalar RM with a tie margin, gold ties."""

import pytest

from omni_rrm_jax.eval.metrics import Outcome, predict, report, summarize


def _rm(label, reward_a, reward_b, margin, subset=None):
  return Outcome(label, predict(reward_a, reward_b, margin), subset=subset,
                 predicted_no_tie=predict(reward_a, reward_b), rewards=(reward_a, reward_b))


# gold, reward A, reward B
PAIRS = [("A", 2.0, 1.0),     # clear win: right either way
         ("A", 1.05, 1.0),    # within a 0.1 margin: a predicted tie
         ("B", 0.0, 0.5),     # right
         ("B", 0.5, 0.2),     # wrong either way
         ("equal", 1.0, 1.02),  # gold tie, predicted tie with the margin
         ("equal", 3.0, 1.0)]  # gold tie, predicted A


def test_predict_margin_and_exact_ties():
  assert predict(1.0, 1.05, 0.1) == "equal" and predict(1.0, 1.2, 0.1) == "B"
  assert predict(2.0, 1.0, 0.1) == "A"
  assert predict(1.0, 1.0) == "equal" and predict(1.0, 1.0 + 1e-9) == "B"


def test_accuracy_with_and_without_ties_by_hand():
  out = summarize([_rm(*p, margin=0.1) for p in PAIRS], ci_samples=0)
  # With ties (6 records): right are 0, 2, 4 -> 3/6; record 1 predicted a tie on gold A.
  assert out["accuracy"] == pytest.approx(3 / 6)
  assert out["ties"] == 2 and out["gold_ties"] == 2
  # Without ties (the 4 gold-decided records, sign only): 0, 1, 2 right -> 3/4.
  assert out["accuracy_without_ties"] == pytest.approx(3 / 4)
  assert out["count_without_ties"] == 4
  assert out["unparseable"] == 0 and out["parse_failure_rate"] == 0.0
  # Margin 0: record 1 becomes right, record 4 wrong (1.0 < 1.02 -> B).
  zero = summarize([_rm(*p, margin=0.0) for p in PAIRS], ci_samples=0)
  assert zero["accuracy"] == pytest.approx(3 / 6)
  assert zero["ties"] == 0


def test_unparseable_counts_as_wrong_and_in_the_failure_rate():
  outcomes = [_rm(*p, margin=0.1) for p in PAIRS] + [Outcome("A", None), Outcome("equal", None)]
  out = summarize(outcomes, ci_samples=0)
  assert out["accuracy"] == pytest.approx(3 / 8)
  assert out["accuracy_parsed_only"] == pytest.approx(3 / 6)
  assert out["accuracy_without_ties"] == pytest.approx(3 / 5)
  assert out["parse_failure_rate"] == pytest.approx(2 / 8)


def test_report_per_subset_carries_intervals():
  outcomes = [_rm(*p, margin=0.1, subset="s1" if i < 3 else "s2") for i, p in enumerate(PAIRS)]
  result = report(outcomes, ci_samples=200, ci_seed=1)
  s1 = result["per_subset"]["s1"]
  assert s1["accuracy"] == pytest.approx(2 / 3)
  low, high = s1["accuracy_ci95"]
  assert 0.0 <= low <= 2 / 3 <= high <= 1.0
  assert result["overall"]["accuracy_ci95"] == report(outcomes, ci_samples=200,
                                                      ci_seed=1)["overall"]["accuracy_ci95"]
