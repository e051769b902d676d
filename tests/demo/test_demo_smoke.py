"""The main job end to end at smoke size: every stage runs, the export reloads in
transformers with the same numbers, and a rerun reuses the finished stages."""

import json
import logging
import os
import re

import pytest

from omni_rrm_jax.core.console import configure_logging
from omni_rrm_jax.demo import run as demo
from omni_rrm_jax.demo.config import get_config

MODALITIES = ["audio", "image", "text", "video"]


@pytest.fixture
def workdir_logging(tmp_path):
  """The CLI's logging set-up (INFO to WORKDIR/log.txt, warnings on the console),
  undone after the test."""
  root = logging.getLogger()
  saved = (root.level, list(root.handlers), [h.level for h in root.handlers])
  configure_logging(str(tmp_path))
  yield tmp_path / "log.txt"
  for handler in root.handlers[:]:
    if handler not in saved[1]:
      root.removeHandler(handler)
      handler.close()
  root.setLevel(saved[0])
  for handler, level in zip(saved[1], saved[2]):
    handler.setLevel(level)


def test_demo_runs_every_stage_and_resumes(tmp_path, capfd, workdir_logging):
  config = get_config("smoke")
  out = demo.run(config, str(tmp_path))
  report = json.loads((tmp_path / "report.json").read_text())

  # The console holds the stage headers and results, not the libraries' INFO lines.
  console = capfd.readouterr()
  text = console.out + console.err
  for i, name in enumerate(demo.STAGES, start=1):
    assert f"[{i}/{len(demo.STAGES)}] {name}: {demo.stage_header(name, config)}" in text
    assert f"[{i}/{len(demo.STAGES)}] {name} done in" in text
  assert "held-out accuracy" in text and "| audio |" in text
  assert not [line for line in text.splitlines() if re.match(r"^(I\d{4} |.* INFO )", line)]
  assert len(text.splitlines()) < 60
  log_lines = workdir_logging.read_text().splitlines()
  assert any(" p0 I orbax" in line or " p0 I absl" in line for line in log_lines)
  assert any("omni_rrm_jax.train.loop" in line for line in log_lines)
  assert out["targets_met"] == report["targets"]["all_met"]

  # Data: real media files, and the reconciliation's books balance.
  rec = report["data"]["reconciliation"]["train"]
  assert rec["kept"] == sum(report["data"]["train"].values())
  assert rec["generated"] - rec["kept"] == sum(rec["filtered"].values()) > 0
  media = tmp_path / "data" / "media"
  suffixes = {p.suffix for p in media.rglob("*") if p.is_file()}
  assert {".png", ".mp4", ".wav"} <= suffixes

  # Every modality was evaluated by the RM and by the judge before and after GRPO.
  assert sorted(report["rm_accuracy"]) == MODALITIES
  assert sorted(report["judge_sft"]) == sorted(report["judge_grpo"]) == MODALITIES
  for rows in (report["judge_sft"], report["judge_grpo"]):
    for row in rows.values():
      assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["valid_json_rate"] <= 1.0
  assert set(report["grpo_rewards"]) >= {"total", "judge_format", "judge_content",
                                         "judge_rubric"}

  # The exported folders load in transformers with our numbers.
  for name in ("judge", "rm"):
    check = report["export"][name]
    assert check["ok"] and check["transformers_max_abs_diff"] <= 1e-4, check
  assert report["export"]["rm"]["architecture"].endswith("ForSequenceClassification")

  table = (tmp_path / "results.md").read_text()
  assert all(f"| {m} |" in table for m in MODALITIES)
  assert sorted(os.listdir(tmp_path / "plots")) == ["grpo.png", "rm.png", "sft.png",
                                                    "summary.png"]

  # A rerun reuses every finished stage and reports the same results.
  demo.run(config, str(tmp_path))
  printed = capfd.readouterr().out
  assert printed.count("done before, reused") == len(demo.STAGES)
  again = json.loads((tmp_path / "report.json").read_text())
  assert again["rm_accuracy"] == report["rm_accuracy"]
  assert again["judge_sft"] == report["judge_sft"]
