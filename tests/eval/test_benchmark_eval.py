"""The eval task on benchmark files in their published schema: a tiny exported RM's
report equals the metrics computed directly from transformers' scores of the
same token ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omni_rrm_jax.core.batch_contract import RM_BATCH
from omni_rrm_jax.data.readers import read_records
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.eval.benchmarks import official_score
from omni_rrm_jax.eval.metrics import Outcome, predict, report
from omni_rrm_jax.eval.run import run
from tests.e2e.runs import load_config
from tests.eval.conftest import MAX_LENGTH

FIXTURES = Path(__file__).parent.parent / "data" / "benchmarks"


def _torch_outcomes(folder: str, records, tie_margin: float) -> list[Outcome]:
  """Outcomes from transformers' rewards of the ids the eval task scores."""
  import torch
  from transformers import AutoModelForSequenceClassification, AutoTokenizer

  hf = AutoModelForSequenceClassification.from_pretrained(folder).eval()
  encoder = ExampleEncoder(AutoTokenizer.from_pretrained(folder), MAX_LENGTH, RM_BATCH,
                           score_ties=True)
  outcomes = []
  for r in records:
    example = encoder.encode(r)
    assert example["valid"]
    with torch.no_grad():
      r_c, r_r = (float(hf(torch.tensor([example[k]])).logits[0, 0])
                  for k in ("chosen", "rejected"))
    ra, rb = (r_r, r_c) if r.label == "B" else (r_c, r_r)
    outcomes.append(Outcome(r.label, predict(ra, rb, tie_margin), r.modality, r.subset,
                            predicted_no_tie=predict(ra, rb), rewards=(ra, rb),
                            record_id=r.id, group=r.group))
  return outcomes


def _eval(folder, variant, data, workdir, **overrides):
  config = load_config("eval", variant, **{
      "model.path": folder, "data.path": str(data), "data.max_length": MAX_LENGTH,
      "data.buckets": (64, MAX_LENGTH), "data.batch_size": 8, "report.ci_samples": 200,
      **overrides})
  run(config, str(workdir))
  return json.loads((workdir / "eval_report.json").read_text())


def test_rewardbench2_report_matches_transformers_scores(rm_folder, tmp_path):
  got = _eval(rm_folder, "rewardbench2", FIXTURES / "rewardbench2.jsonl", tmp_path)
  records = list(read_records(FIXTURES / "rewardbench2.jsonl"))
  outcomes = _torch_outcomes(rm_folder, records, 0.0)
  expected = report(outcomes, ci_samples=200)
  assert got["format"] == "rewardbench2" and got["records"] == len(records) == 15
  for subset, summary in expected["per_subset"].items():
    for key in ("count", "accuracy", "accuracy_without_ties", "accuracy_ci95"):
      assert got["per_subset"][subset][key] == summary[key], (subset, key)
  bench = official_score("rewardbench2", outcomes, ci_samples=200)
  assert got["benchmark"]["score"] == pytest.approx(bench["score"], abs=1e-6)
  assert got["benchmark"]["parts"]["subsets"] == pytest.approx(bench["parts"]["subsets"],
                                                               abs=1e-4)
  assert got["benchmark"]["score_ci95"][0] <= got["benchmark"]["score"] <= (
      got["benchmark"]["score_ci95"][1])
  latency = got["latency"]
  assert latency["compile_calls"] >= 1 and latency["pairs"] + 8 * latency["compile_calls"] >= 15


def test_pandalm_ties_are_scored_with_the_margin(rm_folder, tmp_path):
  records = list(read_records(FIXTURES / "pandalm_testset-v1.json"))
  # A margin between the pairs' reward gaps, so some pairs are predicted ties.
  gaps = sorted(abs(np.subtract(*o.rewards)) for o in _torch_outcomes(rm_folder, records, 0.0))
  margin = float((gaps[1] + gaps[2]) / 2)
  got = _eval(rm_folder, "pandalm", FIXTURES / "pandalm_testset-v1.json", tmp_path,
              **{"report.tie_margin": margin})
  outcomes = _torch_outcomes(rm_folder, records, margin)
  expected = report(outcomes, ci_samples=200)["overall"]
  overall = got["overall"]
  assert overall["unparseable"] == 0  # the gold tie was scored, not dropped
  assert overall["gold_ties"] == 1 and overall["ties"] == 2
  for key in ("accuracy", "accuracy_without_ties", "count_without_ties"):
    assert overall[key] == expected[key], key
  assert got["benchmark"]["parts"] == pytest.approx(
      official_score("pandalm", outcomes, ci_samples=0)["parts"])
