"""The judge report counts valid JSON, accuracy and consistency per modality."""

from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.eval import judge_eval
from omni_rrm_jax.rewards.judgment import render_judgment

REASONS = {name: f"{name} compared for A and B." for name in (
    "fluency_coherence", "relevance", "accuracy_completeness", "reasoning_quality",
    "safety_ethics")}


def _record(i, modality, label):
  return PreferenceRecord(id=str(i), prompt="q", response_a="a", response_b="b", label=label,
                          modality=modality)


def test_valid_json_rate_is_per_modality(monkeypatch):
  records = [_record(0, "text", "A"), _record(1, "text", "B"), _record(2, "audio", "A")]
  a_wins, b_wins = render_judgment(8, 2, REASONS), render_judgment(2, 8, REASONS)
  outputs = {
      # text: both orders valid for record 0; record 1 right but fenced (lenient only)
      # in the first order. audio: garbage first, valid second.
      False: [a_wins, "```json\n" + b_wins + "\n```", "Solution"],
      True: [b_wins, a_wins, b_wins],
  }
  monkeypatch.setattr(judge_eval, "generate_judgments",
                      lambda model, encoder, recs, *, swap, **kw: outputs[swap])
  result = judge_eval.evaluate_judge(None, None, records, max_prompt_length=8, max_new_tokens=8,
                                     batch_size=2, eos_ids=[0], pad_id=0)
  text, audio = result["per_modality"]["text"], result["per_modality"]["audio"]
  assert text["valid_json_rate"] == 3 / 4
  assert audio["valid_json_rate"] == 1 / 2
  assert result["overall"]["valid_json_rate"] == 4 / 6
  assert text["accuracy"] == 1.0 and text["position_consistency"] == 1.0
  assert audio["accuracy"] == 0.0 and audio["unparseable"] == 1


def test_a_judged_tie_on_a_gold_tie_is_right_and_reported_with_intervals(monkeypatch):
  # PandaLM-style gold ties: a judge that says "equal" there is right, not an error.
  records = [_record(0, "text", "equal"), _record(1, "text", "equal"), _record(2, "text", "A")]
  tie, a_wins = render_judgment(5, 5, REASONS), render_judgment(8, 2, REASONS)
  outputs = {False: [tie, a_wins, a_wins], True: [tie, a_wins, render_judgment(2, 8, REASONS)]}
  monkeypatch.setattr(judge_eval, "generate_judgments",
                      lambda model, encoder, recs, *, swap, **kw: outputs[swap])
  result = judge_eval.evaluate_judge(None, None, records, max_prompt_length=8, max_new_tokens=8,
                                     batch_size=2, eos_ids=[0], pad_id=0, ci_samples=100)
  overall = result["overall"]
  assert overall["accuracy"] == 2 / 3 and overall["gold_ties"] == 2 and overall["ties"] == 1
  assert overall["accuracy_without_ties"] == 1.0 and overall["count_without_ties"] == 1
  # Record 1's verdict flips with the order (A, then A shown second -> B mapped back).
  assert overall["position_consistency"] == 2 / 3
  low, high = overall["accuracy_ci95"]
  assert low <= 2 / 3 <= high
  assert [o.record_id for o in result["outcomes"]] == ["0", "1", "2"]
