"""Each benchmark's own score against a hand computation."""

from pathlib import Path

import numpy as np
import pytest

from omni_rrm_jax.data.readers import read_records
from omni_rrm_jax.eval.benchmarks import official_score
from omni_rrm_jax.eval.metrics import Outcome, predict

FIXTURES = Path(__file__).parent.parent / "data" / "benchmarks"


def _scored(records, reward_of):
  """Outcomes of a scalar RM whose reward of a response is `reward_of[text]`."""
  outcomes = []
  for r in records:
    ra, rb = reward_of[r.response_a], reward_of[r.response_b]
    outcomes.append(Outcome(r.label, predict(ra, rb), r.modality, r.subset,
                            predicted_no_tie=predict(ra, rb), rewards=(ra, rb),
                            record_id=r.id, group=r.group))
  return outcomes


def _right(label, right, subset):
  wrong = {"A": "B", "B": "A", "equal": "A"}[label]
  return Outcome(label, label if right else wrong, subset=subset)


def test_rewardbench_section_weighting_by_hand():
  outcomes = [_right("A", True, "alpacaeval-easy"), _right("B", False, "alpacaeval-easy"),
              _right("A", True, "mt-bench-easy"), _right("B", False, "llmbar-natural"),
              _right("A", True, "xstest-should-respond"), _right("A", True, "math-prm"),
              _right("B", False, "hep-python"),
              # An exact reward tie is wrong, as in RewardBench (chosen > rejected).
              Outcome("A", "equal", subset="hep-python", predicted_no_tie="equal"),
              _right("A", True, "not-a-rewardbench-subset")]
  result = official_score("rewardbench", outcomes, ci_samples=300)
  chat = (0.5 * 100 + 1.0 * 28) / 128
  reasoning = 984 / (984 + 164)
  assert result["parts"]["sections"] == pytest.approx(
      {"Chat": chat, "Chat Hard": 0.0, "Safety": 1.0, "Reasoning": reasoning})
  assert result["score"] == pytest.approx((chat + 0.0 + 1.0 + reasoning) / 4)
  assert "not-a-rewardbench-subset" not in result["parts"]["subsets"]
  low, high = result["score_ci95"]
  assert low <= result["score"] <= high


REWARDS_RB2 = {
    # f-1: the chosen answer shares the top score with one rejected -> 1/2.
    "William Shakespeare wrote Hamlet.": 2.0, "Charles Dickens wrote Hamlet.": 1.0,
    "Jane Austen wrote it.": 0.5, "It was Homer.": 2.0,
    # f-2: chosen on top -> 1.
    "100 degrees Celsius.": 3.0, "90 degrees Celsius.": 1.0, "80 degrees.": 1.0,
    "212 degrees Celsius.": 1.0,
    # m-1: a rejected answer on top -> 0.
    "x = 2": 0.0, "x = 8": 1.0, "x = -2": -1.0, "x = 3": -2.0,
    # Ties, prompt 7: reference (one correct) and tied (three correct).
    "Paris.": 5.0, "Lyon.": 1.0, "Marseille.": 2.0,
    "2": 4.0, "3": 3.5, "5": 3.0, "4": 1.0, "9": 2.5,
}


def test_rewardbench2_best_of_4_and_ties_by_hand():
  records = list(read_records(FIXTURES / "rewardbench2.jsonl"))
  result = official_score("rewardbench2", _scored(records, REWARDS_RB2), ci_samples=200)
  # Ties: both accuracies 1; tied gap 3 - 2.5 = 0.5 is not above the spread among
  # correct answers 4 - 3 = 1, nor is min(ref gap 5 - 2 = 3, 0.5); margin tanh(0.5 / 1 - 1).
  ties = 0.3 + 0.3 + 0.0 + 0.0 + 0.01 * np.tanh(-0.5)
  assert result["parts"]["subsets"] == pytest.approx(
      {"Factuality": 0.75, "Math": 0.0, "Ties": ties})
  assert result["score"] == pytest.approx((0.75 + 0.0 + ties) / 3)
  assert result["parts"]["items"] == 4  # three best-of-4 items and one Ties prompt


def test_rewardbench2_ties_margins_count_when_the_gap_beats_the_spread():
  records = list(read_records(FIXTURES / "rewardbench2.jsonl"))
  rewards = dict(REWARDS_RB2, **{"2": 3.2, "3": 3.1, "5": 3.0})  # spread 0.2, gap 0.5
  result = official_score("rewardbench2", _scored(records, rewards), ci_samples=0)
  ties = 0.3 + 0.3 + 0.2 + 0.2 + 0.01 * np.tanh(0.5 / 0.2 - 1)
  assert result["parts"]["subsets"]["Ties"] == pytest.approx(ties)
  assert result["score_ci95"] is None


def test_vl_rewardbench_macro_over_groups():
  outcomes = [_right("A", True, "general"), _right("B", False, "general"),
              _right("A", True, "hallucination"), _right("B", False, "reasoning")]
  result = official_score("vl_rewardbench", outcomes, ci_samples=0)
  assert result["score"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
  assert result["parts"]["overall_accuracy"] == pytest.approx(2 / 4)


def test_mm_rewardbench_overall_is_over_records():
  outcomes = [_right("A", True, "safety/bias"), _right("B", True, "correctness"),
              _right("A", True, "correctness"), _right("B", False, "reasoning/math")]
  result = official_score("mm_rewardbench", outcomes, ci_samples=0)
  assert result["score"] == pytest.approx(3 / 4)
  assert result["parts"]["categories"]["correctness"] == 1.0


def test_omni_rewardbench_with_and_without_ties():
  outcomes = [_right("A", True, "t1"), _right("equal", False, "t1"), _right("B", False, "t1"),
              _right("A", True, "t2")]
  result = official_score("omni_rewardbench", outcomes, ci_samples=0)
  assert result["score"] == pytest.approx((1 / 2 + 1.0) / 2)
  assert result["parts"]["score_with_ties"] == pytest.approx((1 / 3 + 1.0) / 2)


def test_pandalm_accuracy_and_macro_f1_count_ties_as_a_class():
  outcomes = [Outcome("A", "A"), Outcome("equal", "equal"), Outcome("B", "A"), Outcome("A", None)]
  parts = official_score("pandalm", outcomes, ci_samples=0)["parts"]
  assert parts["accuracy"] == pytest.approx(2 / 4)
  # tie: P 1/2 R 1; first: P 1/2 R 1/2; second: 0 (an unusable output counts as a tie).
  assert parts["precision"] == pytest.approx((0.5 + 0.5 + 0) / 3)
  assert parts["recall"] == pytest.approx((1 + 0.5 + 0) / 3)
  assert parts["f1"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)


def test_formats_without_an_own_score_give_none():
  assert official_score("native", [_right("A", True, None)]) is None
  assert official_score("rewardbench", []) is None


def test_rewardbench2_for_a_judge_needs_every_pair_of_the_chosen_answer():
  records = [r for r in read_records(FIXTURES / "rewardbench2.jsonl") if r.subset != "Ties"]
  # A judge (no rewards) that is right on every pair except one of item f-2.
  wrong = next(r.id for r in records if r.group["id"] == "f-2")
  outcomes = [_right(r.label, r.id != wrong, r.subset) for r in records]
  outcomes = [Outcome(o.label, o.predicted, subset=o.subset, group=r.group)
              for o, r in zip(outcomes, records)]
  result = official_score("rewardbench2", outcomes, ci_samples=0)
  assert result["parts"]["subsets"] == {"Factuality": 0.5, "Math": 1.0}
  assert result["score"] == pytest.approx(0.75)
