"""Best-of-N: reading items, the knockout, the report by hand, and the `bon` task
with a tiny RM against transformers' scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.bon_items import BonItem, read_bon_items
from omni_rrm_jax.eval import bon_task
from omni_rrm_jax.eval.best_of_n import bon_report, knockout, votes
from omni_rrm_jax.rewards.judgment import render_judgment
from tests.e2e.runs import load_config
from tests.eval.conftest import MAX_LENGTH

FIXTURES = Path(__file__).parent.parent / "data" / "benchmarks"


def test_items_from_native_rows_and_rewardbench2_rows():
  counter = BadRecordCounter()
  items = list(read_bon_items(FIXTURES / "bon_items.jsonl", counter=counter))
  assert [i.id for i in items] == ["q1", "q2", "q3", "q4"]
  assert counter.skipped == {"a Best-of-N row needs at least two candidates": 1}
  rows = [json.loads(line) for line in (FIXTURES / "bon_items.jsonl").read_text().splitlines()]
  for item, row in zip(items, rows):
    # A seeded order, the same (text, quality) pairs.
    pairs = zip(row["candidates"], row.get("quality") or [None] * len(row["candidates"]))
    got = zip(item.candidates, item.quality or [None] * len(item.candidates))
    assert sorted(got, key=str) == sorted(pairs, key=str)
  assert items[3].quality is None
  assert [i.candidates for i in read_bon_items(FIXTURES / "bon_items.jsonl")] == [
      i.candidates for i in items]
  reordered = [i.candidates for i in read_bon_items(FIXTURES / "bon_items.jsonl", seed=1)]
  assert reordered != [i.candidates for i in items]
  rb2 = list(read_bon_items(FIXTURES / "rewardbench2.jsonl"))
  assert len(rb2) == 5 and rb2[0].subset == "Factuality"
  quality = dict(zip(rb2[0].candidates, rb2[0].quality))
  assert quality["William Shakespeare wrote Hamlet."] == 1.0
  assert sorted(quality.values()) == [0.0, 0.0, 0.0, 1.0]
  assert sum(rb2[4].quality) == 3  # the tied item's three correct answers


def test_votes_from_both_orders():
  assert votes("A", "B") == (2, 0)  # both orders prefer the first candidate
  assert votes("A", "A") == (1, 1)  # position bias: one vote each
  assert votes("equal", "A") == (0.5, 1.5)
  assert votes(None, "B") == (1, 0)


def test_knockout_with_a_judge_that_knows_the_quality_finds_the_best():
  quality = [[0.1, 0.9, 0.3], [0.5, 0.2, 0.7, 0.1, 0.9], [0.4, 0.3]]

  def judge(matches):
    out = []
    for m in matches:
      q = quality[m.item]
      better_first = q[m.first] > q[m.second]
      out.append(("A" if better_first else "B", "B" if better_first else "A"))
    return out

  winners, matches = knockout([len(q) for q in quality], judge)
  assert winners == [int(np.argmax(q)) for q in quality]
  assert matches == sum(len(q) - 1 for q in quality)


def test_knockout_with_a_position_biased_judge_keeps_the_first_candidate():
  winners, _ = knockout([4, 3], lambda matches: [("A", "A")] * len(matches))
  assert winners == [0, 0]


def test_report_by_hand():
  items = [BonItem("a", "p", ("x", "y", "z"), (1.0, 0.0, 0.0), "s1"),
           BonItem("b", "p", ("x", "y"), (0.0, 1.0), "s1"),
           BonItem("c", "p", ("x", "y", "z", "w"), (0.2, 0.4, 0.6, 0.8), "s2"),
           BonItem("d", "p", ("x", "y"), None, None)]
  result = bon_report(items, [0, 0, 2, 1], ci_samples=500, ci_seed=0)
  overall = result["overall"]
  assert result["labelled"] == 3 and result["items"] == 4
  assert overall["picked_quality"] == pytest.approx((1.0 + 0.0 + 0.6) / 3)
  assert overall["random_quality"] == pytest.approx((1 / 3 + 0.5 + 0.5) / 3)
  assert overall["oracle_quality"] == pytest.approx((1.0 + 1.0 + 0.8) / 3)
  gains = [1.0 - 1 / 3, 0.0 - 0.5, 0.6 - 0.5]
  assert overall["gain_over_random"] == pytest.approx(np.mean(gains))
  assert overall["gap_closed"] == pytest.approx(sum(gains) / (2 / 3 + 0.5 + 0.3))
  low, high = overall["gain_over_random_ci95"]
  assert low <= overall["gain_over_random"] <= high
  assert result["per_subset"]["s2"]["picked_quality"] == pytest.approx(0.6)


def test_judge_knockout_through_generate_judgments(monkeypatch):
  """The task's judge: both orders of each match, verdicts parsed from judgments."""
  items = [BonItem("a", "p", ("short", "a much longer answer", "mid answer"))]
  reasons = {k: f"{k} compared." for k in ("fluency_coherence", "relevance",
                                            "accuracy_completeness", "reasoning_quality",
                                            "safety_ethics")}

  def fake(model, encoder, records, *, swap, **kw):  # prefers the longer response
    return [render_judgment(8, 2, reasons) if len(r.response_a) > len(r.response_b) else
            render_judgment(2, 8, reasons) for r in (
                [type(r)(**{**r.__dict__, "response_a": r.response_b, "response_b": r.response_a})
                 for r in records] if swap else records)]

  monkeypatch.setattr(bon_task, "generate_judgments", fake)
  winners, matches = knockout([3], bon_task.judge_matches(None, None, items))
  assert winners == [1] and matches == 2


def test_bon_task_picks_the_rm_argmax(rm_folder, tmp_path):
  import torch
  from transformers import AutoModelForSequenceClassification

  config = load_config("bon", "", **{
      "model.path": rm_folder, "data.path": str(FIXTURES / "bon_items.jsonl"),
      "data.max_length": MAX_LENGTH, "data.buckets": (64, MAX_LENGTH), "data.batch_size": 8,
      "report.ci_samples": 200})
  bon_task.run(config, str(tmp_path))
  report = json.loads((tmp_path / "bon_report.json").read_text())
  picks = [json.loads(line) for line in (tmp_path / "bon_picks.jsonl").read_text().splitlines()]
  assert report["picker"] == "rm" and report["labelled"] == 3 and len(picks) == 4
  # transformers' scores of the same ids pick the same candidates.
  reward = bon_task.ModelReward(rm_folder, max_length=MAX_LENGTH, batch_size=8, bucket=64)
  hf = AutoModelForSequenceClassification.from_pretrained(rm_folder).eval()
  items = list(read_bon_items(FIXTURES / "bon_items.jsonl"))
  for item, row in zip(items, picks):
    with torch.no_grad():
      scores = [float(hf(torch.tensor([reward.encode(item.prompt, c)])).logits[0, 0])
                for c in item.candidates]
    assert row["picked"] == int(np.argmax(scores))
    np.testing.assert_allclose([c["score"] for c in row["candidates"]], scores, atol=1e-4)
  expected = bon_report(items, [row["picked"] for row in picks], ci_samples=200)
  assert report["overall"] == expected["overall"]


def test_bon_task_runs_a_judge_knockout(rm_folder, tmp_path):
  """A tiny random causal LM as the judge: every match is judged in both orders
  (its judgments are unusable, so each match keeps its first candidate)."""
  import omni_rrm_jax as orj
  from omni_rrm_jax.models.hf_save import save_pretrained
  from transformers import AutoTokenizer

  tok_dir = Path(rm_folder)  # the tiny tokenizer saved with the RM
  tok = AutoTokenizer.from_pretrained(tok_dir)
  judge = orj.from_config("Qwen2ForCausalLM", dict(
      vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
      eos_token_id=tok.eos_token_id), seed=1)
  folder = save_pretrained(judge, str(tmp_path / "judge"), tokenizer_dir=str(tok_dir))
  config = load_config("bon", "", **{
      "model.path": folder,
      "data.path": str(FIXTURES / "bon_items.jsonl"), "data.max_length": 64,
      "data.buckets": (64,), "data.batch_size": 8, "judge.max_new_tokens": 4,
      "report.ci_samples": 50})
  bon_task.run(config, str(tmp_path / "out"))
  report = json.loads((tmp_path / "out" / "bon_report.json").read_text())
  picks = [json.loads(line) for line in (tmp_path / "out" / "bon_picks.jsonl").read_text()
           .splitlines()]
  assert report["picker"] == "judge"
  assert report["matches"] == (4 - 1) + (3 - 1) + (5 - 1) + (2 - 1)
  assert [row["picked"] for row in picks] == [0, 0, 0, 0]
  assert report["latency_per_match"]["compile_calls"] >= 1


def test_bon_rejects_a_preference_format():
  config = load_config("bon", "", **{"model.path": "x", "data.path": "y",
                                     "data.format": "pandalm"})
  with pytest.raises(ValueError, match="data.format='pandalm': Best-of-N reads rows"):
    bon_task.run(config, "unused")
