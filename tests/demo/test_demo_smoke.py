"""The main job end to end at smoke size: every stage runs, the media-blind control
and the standard errors are reported, the export reloads in transformers with the
same numbers, and a rerun reuses the finished stages."""

import collections
import json
import logging
import math
import os
import re

import pytest

from omni_rrm_jax.core.console import configure_logging
from omni_rrm_jax.demo import run as demo
from omni_rrm_jax.demo.config import get_config
from omni_rrm_jax.demo.report import pct_se
from omni_rrm_jax.core.standard_error import binomial_se
from omni_rrm_jax.synthetic.omni import task_weights

MODALITIES = ["audio", "image", "text", "video"]
MEDIA = ["audio", "image", "video"]


def _check_accuracy_row(row, count):
  """An accuracy row holds its count and the binomial standard error sqrt(p(1-p)/n)."""
  assert row["count"] == count and 0.0 <= row["accuracy"] <= 1.0
  p = row["accuracy"]
  assert row["accuracy_se"] == pytest.approx(math.sqrt(p * (1 - p) / count))


def test_the_printed_standard_error_by_hand():
  # 21 of 32 right: sqrt(0.65625 * 0.34375 / 32) = 0.0840, printed in points.
  assert pct_se({"accuracy": 21 / 32, "accuracy_se": binomial_se(21 / 32, 32)}) == (
      "65.6% ± 8.4")
  assert pct_se({"accuracy": 0.5, "accuracy_se": None}) == "50.0%" and pct_se(None) == "-"


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


def read_jsonl_ids(path) -> list[str]:
  return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


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
  # The judge SFT trains on each pair followed by its A/B-swapped twin, the pairs of
  # the tasks in data.sft_task_weights as often as their weight says; the RM on the pairs.
  train = read_jsonl_ids(tmp_path / "data" / "train.jsonl")
  sft = read_jsonl_ids(tmp_path / "data" / "train_sft.jsonl")
  assert sft[1::2] == [i + "-swap" for i in sft[::2]] and set(sft[::2]) == set(train)
  weights = task_weights(config.data.sft_task_weights)
  assert weights  # the demo gives audio-direction more of the judge's steps
  subset = {json.loads(line)["id"]: json.loads(line)["subset"]
            for line in (tmp_path / "data" / "train.jsonl").read_text().splitlines()}
  times = collections.Counter(sft[::2])
  assert all(times[i] == weights.get(subset[i], 1.0) for i in train)
  # The report counts the judge file's rows, twins included.
  assert report["data"]["train_sft_by_task"] == dict(sorted(collections.Counter(
      subset[i.removesuffix("-swap")] for i in sft).items()))
  # The RM trains on its own file: the pairs of data/train.jsonl, those of the tasks
  # in data.rm_task_weights as often as their weight says.
  rm_weights = task_weights(config.data.rm_task_weights)
  assert rm_weights  # the demo gives the text tasks more of the RM's steps
  rm_times = collections.Counter(read_jsonl_ids(tmp_path / "data" / "train_rm.jsonl"))
  assert set(rm_times) == set(train)
  assert all(rm_times[i] == rm_weights.get(subset[i], 1.0) for i in train)
  assert report["data"]["train_rm_by_task"] == dict(sorted(collections.Counter(
      subset[i] for i in rm_times.elements()).items()))
  rm_result = json.loads((tmp_path / "rm" / "stage.json").read_text())["result"]
  assert rm_result["train_file"] == "train_rm.jsonl"
  sft_result = json.loads((tmp_path / "sft" / "stage.json").read_text())["result"]
  assert sft_result["train_file"] == "train_sft.jsonl"
  sft_inputs = sft_result["inputs"]
  assert sft_inputs["examples"] == config.sft.train.num_steps * config.sft.data.batch_size

  # Every modality was evaluated by the RM and by the judge before and after GRPO,
  # each accuracy with its standard error over the held-out pairs.
  per_kind = config.data.eval_per_kind
  assert report["data"]["eval"] == {m: per_kind for m in MODALITIES}
  assert sorted(report["rm"]) == MODALITIES
  assert sorted(report["judge_sft"]) == sorted(report["judge_grpo"]) == MODALITIES
  for rows in (report["rm"], report["judge_sft"], report["judge_grpo"]):
    for row in rows.values():
      _check_accuracy_row(row, per_kind)
  for rows in (report["judge_sft"], report["judge_grpo"]):
    for row in rows.values():
      assert 0.0 <= row["valid_json_rate"] <= 1.0
  for stage in ("sft", "grpo"):
    _check_accuracy_row(report["judge_accuracy_overall"][stage], per_kind * len(MODALITIES))

  # The media-blind control: the held-out media pairs again, with blank files of
  # the same shape; text has none (n/a).
  assert report["data"]["eval_blind"] == {m: per_kind for m in MEDIA}
  blind_files = sorted(p.relative_to(media / "blind").as_posix()
                       for p in (media / "blind").rglob("*") if p.is_file())
  real = [json.loads(line) for line in (tmp_path / "data" / "eval.jsonl").open()]
  assert blind_files == sorted(p for r in real for p in (r["media"]["images"] + [
      r["media"][k] for k in ("video", "audio") if r["media"][k]]))
  for who in ("rm", "judge_sft", "judge_grpo"):
    rows = report["blind"][who]
    assert sorted(rows) == MODALITIES and rows["text"] is None
    for m in MEDIA:
      _check_accuracy_row(rows[m], per_kind)
  for target in ("media_blind_rm_per_modality", "media_blind_judge_per_modality"):
    assert sorted(report["targets"][target]) == MEDIA

  # GRPO's held-out rewards carry the standard error of their mean.
  rewards = report["grpo_rewards"]
  assert set(rewards) >= {"total", "judge_format", "judge_content", "judge_rubric"}
  for r in rewards.values():
    assert r["before_se"] >= 0.0 and r["after_se"] >= 0.0
    # and the change its standard error paired by prompt, over every held-out prompt.
    assert r["change_se_paired"] >= 0.0
    assert r["paired_prompts"] == config.grpo.eval.num_prompts

  # The exported folders load in transformers with our numbers.
  for name in ("judge", "rm"):
    check = report["export"][name]
    assert check["ok"] and check["transformers_max_abs_diff"] <= 1e-4, check
  assert report["export"]["rm"]["architecture"].endswith("ForSequenceClassification")

  table = (tmp_path / "results.md").read_text()
  assert all(f"| {m} |" in table for m in MODALITIES)
  assert "| RM media-blind |" in table and "| judge media-blind SFT |" in table
  text_row = next(line for line in table.splitlines() if line.startswith("| text |"))
  assert text_row.count("| n/a ") == 3
  assert f"| {pct_se(report['rm']['audio'])}" in table
  assert re.search(r"\| total \| -?\d\.\d{3} ± \d\.\d{3} \| -?\d\.\d{3} ± \d\.\d{3} \|", table)
  assert sorted(os.listdir(tmp_path / "plots")) == ["grpo.png", "rm.png", "sft.png",
                                                    "summary.png"]

  # A rerun reuses every finished stage and reports the same results.
  demo.run(config, str(tmp_path))
  printed = capfd.readouterr().out
  assert printed.count("done before, reused") == len(demo.STAGES)
  again = json.loads((tmp_path / "report.json").read_text())
  assert again["rm"] == report["rm"] and again["blind"] == report["blind"]
  assert again["judge_sft"] == report["judge_sft"]
