"""The main job's report: targets are checked per modality and shown in the table."""

import json
import os

import ml_collections
import pytest

from omni_rrm_jax.demo import report as report_lib
from omni_rrm_jax.demo.config import get_config
from omni_rrm_jax.main import expand_subcommand

MODALITIES = ("audio", "image", "text", "video")
MEDIA = ("audio", "image", "video")
COUNT = 10  # held-out pairs per modality


def _judge(acc, valid, consistency=1.0, modalities=MODALITIES):
  per = {m: {"accuracy": acc[m], "count": COUNT, "valid_json_rate": valid[m],
             "position_consistency": consistency} for m in modalities}
  overall = sum(acc[m] for m in modalities) / len(modalities)
  return {"overall": {"accuracy": overall, "count": COUNT * len(modalities)},
          "per_modality": per}


def _rm(acc, modalities=MODALITIES):
  return {"per_modality": {m: {"accuracy": acc[m], "count": COUNT} for m in modalities}}


def _results(rm_acc, sft_acc, sft_valid, grpo_acc, reward_before, reward_after, blind_rm,
             blind_judge, sft_consistency=1.0):
  full = {m: 1.0 for m in MODALITIES}
  return {
      "data": {"train": {m: 100 for m in MODALITIES}, "eval": {m: 10 for m in MODALITIES},
               "reconciliation": {"train": {"generated": 500, "kept": 400}}},
      "rm": {"step": 10, "train_compiles": 3, "batch_shapes": 3},
      "sft": {"step": 10, "train_compiles": 2, "batch_shapes": 2},
      "eval_sft": {"rm": _rm(rm_acc), "judge": _judge(sft_acc, sft_valid, sft_consistency),
                   "rm_blind": _rm(blind_rm, MEDIA),
                   "judge_blind": _judge(blind_judge, full, modalities=MEDIA)},
      "grpo": {"eval_start": {"reward/total_mean": reward_before, "reward/total_std": 0.3,
                              "reward/judge_format_mean": 0.5, "num_completions": 10},
               "eval": {"reward/total_mean": reward_after, "reward/total_std": 0.3,
                        "reward/judge_format_mean": 0.6, "num_completions": 10}},
      "eval_grpo": {"judge": _judge(grpo_acc, full),
                    "judge_blind": _judge(blind_judge, full, modalities=MEDIA)},
      "export": {"judge": {"ok": True}},
  }


def _report(**kw):
  full = {m: 1.0 for m in MODALITIES}
  chance = {m: 0.5 for m in MODALITIES}
  # Standard errors 0.1 each (see below): a rise of 0.3 is more than two of the
  # difference's (2 * sqrt(0.02) = 0.283).
  args = dict(rm_acc=full, sft_acc=full, sft_valid=full, grpo_acc=full, reward_before=0.2,
              reward_after=0.5, blind_rm=chance, blind_judge=chance)
  args.update(kw)
  return report_lib.build_report(_results(**args), {"data": 1.0, "rm": 2.0},
                                 ml_collections.ConfigDict({"seed": 0}))


def test_all_targets_met():
  report = _report()
  assert report["targets"]["all_met"]
  table = report_lib.results_table(report)
  assert "all met" in table and "below target" not in table
  for m in MODALITIES:
    assert f"| {m} | 100/10 |" in table


@pytest.mark.parametrize("change, target", [
    (dict(rm_acc={"audio": 0.94, "image": 1.0, "text": 1.0, "video": 1.0}),
     "rm_accuracy_per_modality[audio]"),
    (dict(sft_acc={"audio": 1.0, "image": 0.89, "text": 1.0, "video": 1.0}),
     "judge_accuracy_per_modality[image]"),
    (dict(sft_valid={"audio": 1.0, "image": 1.0, "text": 0.97, "video": 1.0}),
     "judge_valid_json_per_modality[text]"),
    # Every modality at 89% consistency: each is named, the first in the line.
    (dict(sft_consistency=0.89), "judge_position_consistency_per_modality[audio]"),
    (dict(reward_after=0.2), "grpo_raises_judge_reward"),
    # Higher, but by less than two standard errors of the difference.
    (dict(reward_after=0.45), "grpo_raises_judge_reward"),
    (dict(grpo_acc={"audio": 1.0, "image": 1.0, "text": 1.0, "video": 0.9}),
     "grpo_keeps_accuracy"),
    (dict(blind_rm={"audio": 0.5, "image": 0.7, "text": 1.0, "video": 0.6}),
     "media_blind_rm_per_modality[image]"),
    (dict(blind_judge={"audio": 0.8, "image": 0.5, "text": 1.0, "video": 0.5}),
     "media_blind_judge_per_modality[audio]"),
])
def test_a_missed_target_is_named(change, target):
  report = _report(**change)
  assert not report["targets"]["all_met"]
  table = report_lib.results_table(report)
  assert f"NOT all met: {target}" in table
  if target.startswith("judge_position_consistency"):
    assert "| 89.0% (below target) |" in table  # the table's A/B consistency column
  assert json.loads(json.dumps(report))  # the report is plain JSON


def test_accuracies_and_rewards_carry_standard_errors():
  report = _report(rm_acc={"audio": 0.8, "image": 1.0, "text": 1.0, "video": 1.0},
                   blind_rm={"audio": 0.5, "image": 0.6, "text": 1.0, "video": 0.3})
  # sqrt(0.8 * 0.2 / 10) = 0.12649; sqrt(0.5 * 0.5 / 10) = 0.15811.
  assert report["rm"]["audio"] == {"accuracy": 0.8, "count": 10,
                                   "accuracy_se": pytest.approx(0.126491, abs=1e-6)}
  assert report["rm"]["image"]["accuracy_se"] == 0.0
  assert report["blind"]["rm"]["audio"]["accuracy_se"] == pytest.approx(0.158114, abs=1e-6)
  assert report["blind"]["judge_sft"]["video"]["accuracy_se"] == pytest.approx(0.158114,
                                                                               abs=1e-6)
  assert report["judge_accuracy_overall"]["sft"] == {"accuracy": 1.0, "count": 40,
                                                     "accuracy_se": 0.0}
  # Text has no media: no blind number, and no blind target.
  assert report["blind"]["rm"]["text"] is None and report["blind"]["judge_grpo"]["text"] is None
  assert sorted(report["targets"]["media_blind_rm_per_modality"]) == list(MEDIA)
  # 60% is within the control's limit, 61% not.
  assert report["targets"]["media_blind_rm_per_modality"]["image"]
  # Population std 0.3 over 10 samples: 0.3 / sqrt(9) = 0.1.
  total = report["grpo_rewards"]["total"]
  assert (total["before_se"], total["after_se"]) == (pytest.approx(0.1), pytest.approx(0.1))
  assert report["grpo_rewards"]["judge_format"]["before_se"] is None  # no std logged
  table = report_lib.results_table(report)
  assert "| audio | 100/10 | 80.0% ± 12.6 (below target) | 50.0% ± 15.8 | 100.0% ± 0.0 |" in table
  assert "| text | 100/10 | 100.0% ± 0.0 | n/a | 100.0% ± 0.0 | n/a |" in table
  # No per-prompt rewards: no paired error, the independent one decides.
  assert "| total | 0.200 ± 0.100 | 0.500 ± 0.100 | +0.300 | - | 0.283 |" in table
  assert "| judge_format | 0.500 | 0.600 |" in table


def test_a_blind_control_not_measured_is_not_met():
  results = _results(**{k: {m: 1.0 for m in MODALITIES} for k in (
      "rm_acc", "sft_acc", "sft_valid", "grpo_acc", "blind_rm", "blind_judge")},
      reward_before=0.2, reward_after=0.3)
  for stage in ("eval_sft", "eval_grpo"):
    results[stage] = {k: v for k, v in results[stage].items() if not k.endswith("_blind")}
  report = report_lib.build_report(results, {}, ml_collections.ConfigDict())
  assert report["blind"]["rm"] == {m: None for m in MODALITIES}
  assert not any(report["targets"]["media_blind_judge_per_modality"].values())
  assert "| image | 100/10 | 100.0% ± 0.0 | - (not measured) |" in (
      report_lib.results_table(report))


def test_curves_are_plotted_from_metrics_with_held_out_points(tmp_path):
  rows = [{"step": s, "split": "train", "loss": 1.0 / s, "accuracy": 0.5 + s / 100}
          for s in (1, 2, 3, 4)]
  rows += [{"step": s, "split": "eval", "loss": 0.9 / s, "accuracy": 0.55 + s / 100}
           for s in (2, 4)]
  os.makedirs(tmp_path / "rm")
  (tmp_path / "rm" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  written = report_lib.plot_curves(str(tmp_path), str(tmp_path / "plots"), _report())
  assert written == [str(tmp_path / "plots" / "rm.png"), str(tmp_path / "plots" / "summary.png")]
  for path in written:
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  # Held-out points are read apart from the training values.
  assert report_lib._series(rows, "eval", "loss") == ([2, 4], [0.45, 0.225])
  assert report_lib._series(rows, "train", "loss")[0] == [1, 2, 3, 4]


def test_smoothing_is_a_debiased_moving_average():
  assert report_lib.smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
  out = report_lib.smooth([0.0, 1.0], weight=0.5)
  # (0.5 * 0 + 0.5 * 1) / (1 - 0.25) = 2/3: the second value pulls, the first holds.
  assert out == pytest.approx([0.0, 2 / 3])


def test_curves_fall_back_to_the_summary_history(tmp_path):
  history = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)]
  os.makedirs(tmp_path / "sft")
  (tmp_path / "sft" / "summary.json").write_text(json.dumps({"history": history}))
  written = report_lib.plot_curves(str(tmp_path), str(tmp_path / "plots"))
  assert written == [str(tmp_path / "plots" / "sft.png"), str(tmp_path / "plots" / "summary.png")]


def test_demo_subcommand_and_config():
  argv = expand_subcommand(["omni-rrm", "demo", "--workdir=w", "--config.seed=3"])
  assert argv[1].startswith("--config=") and argv[1].endswith(os.path.join("demo", "config.py"))
  assert argv[2:] == ["--workdir=w", "--config.seed=3"]
  assert expand_subcommand(["omni-rrm", "--config=x"]) == ["omni-rrm", "--config=x"]
  assert get_config().task == "demo"
  with pytest.raises(ValueError, match="unknown demo variant"):
    get_config("huge")


def test_stage_configs_are_task_configs_with_the_workdir_files(tmp_path):
  from omni_rrm_jax.demo import run as demo

  cfg, paths = get_config(), demo.Paths(str(tmp_path))
  cfg.rm.optim.weight_decay = 0.25
  cfg.sft.data.group_by_modality = True
  rm, sft = demo._stage_config(cfg.rm, paths), demo._stage_config(cfg.sft, paths)
  assert (rm.optim.weight_decay, sft.optim.weight_decay) == (0.25, 0.01)
  assert sft.data.group_by_modality and not rm.data.group_by_modality
  assert (rm.data.train_path, rm.data.eval_path, rm.data.media_root, rm.tokenizer) == (
      paths.train, paths.eval, paths.media, paths.tokenizer)
  assert rm.model.path == "" and cfg.rm.data.train_path == ""  # the demo's own stays as set
  ev = demo._stage_config(cfg.eval, paths, model_path=paths.hf("rm"))
  assert (ev.data.path, ev.model.path) == (paths.eval, paths.hf("rm"))
  assert demo.sft_start(cfg, paths) == paths.hf("rm")  # the default: from the RM's trunk
  cfg.sft_from_rm = False
  assert demo.sft_start(cfg, paths) == ""

def test_data_tasks_pick_tasks_per_kind_and_name_a_wrong_one(tmp_path):
  from omni_rrm_jax.demo import run as demo

  assert demo.tasks_by_kind("") == {}
  assert demo.tasks_by_kind("image-colour, audio-level,image-shape") == {
      "image": ["image-colour", "image-shape"], "audio": ["audio-level"]}
  with pytest.raises(ValueError, match="data.tasks names 'image-color'"):
    demo.tasks_by_kind("image-color")
  # The data stage writes only the named tasks of a kind, every task of the others.
  cfg = get_config("smoke")
  # The demo's RM weights name text tasks, which this data leaves out.
  cfg.data.update(kinds="image,audio", tasks="image-colour", train_per_kind=6, eval_per_kind=8,
                  rm_task_weights="")
  result = demo.stage_data(cfg, demo.Paths(str(tmp_path)))
  # Held-out labels are the truth: no teacher drops or relabels a held-out pair.
  held = result["reconciliation"]["eval"]
  assert held["generated"] == held["kept"] == 16 and held["kept_against_truth"] == 0
  subsets = [json.loads(line)["subset"]
             for line in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
  assert {s for s in subsets if s.startswith("image")} == {"image-colour"}
  assert {s for s in subsets if s.startswith("audio")} == {"audio-count", "audio-direction",
                                                           "audio-level"}
  assert not (tmp_path / "data" / "train_rm.jsonl").exists()  # no RM weights, no RM file
  # A weight for a task the data leaves out is refused before anything is written.
  cfg.data.rm_task_weights = "text-colour:2"
  with pytest.raises(ValueError, match="data.rm_task_weights names 'text-colour'"):
    demo.stage_data(cfg, demo.Paths(str(tmp_path / "refused")))
  assert not (tmp_path / "refused").exists()


def test_the_paired_error_decides_when_per_prompt_rewards_are_known():
  results = _results(**{k: {m: 1.0 for m in MODALITIES} for k in (
      "rm_acc", "sft_acc", "sft_valid", "grpo_acc")},
      blind_rm={m: 0.5 for m in MODALITIES}, blind_judge={m: 0.5 for m in MODALITIES},
      reward_before=0.40, reward_after=0.45)
  # +0.05, under the independent 0.283, but every one of four prompts rose by
  # 0.04-0.06: paired differences (0.04, 0.06, 0.05, 0.05), sample std 0.008165,
  # standard error 0.004082, two of them 0.008.
  index, modality = [0, 1, 2, 3], ["text", "text", "image", "image"]
  results["grpo"]["eval_start"]["prompts"] = {"index": index, "modality": modality,
                                              "total": [0.0, 0.2, 0.6, 0.8]}
  results["grpo"]["eval"]["prompts"] = {"index": index, "modality": modality,
                                        "total": [0.04, 0.26, 0.65, 0.85]}
  report = report_lib.build_report(results, {}, ml_collections.ConfigDict())
  total = report["grpo_rewards"]["total"]
  assert total["change_se_paired"] == pytest.approx(0.0040825, abs=1e-6)
  assert total["paired_prompts"] == 4
  assert report["targets"]["grpo_raises_judge_reward"]
  table = report_lib.results_table(report)
  assert "| total | 0.400 ± 0.100 | 0.450 ± 0.100 | +0.050 | 0.008 | 0.283 |" in table
  # By modality: text's prompts rose by 0.04 and 0.06, image's by 0.05 each.
  by = report["grpo_change_by_modality"]
  assert by["text"] == {"change": pytest.approx(0.05), "se": pytest.approx(0.01),
                        "prompts": 2}
  assert by["image"]["change"] == pytest.approx(0.05) and by["image"]["se"] == pytest.approx(0)
  assert ("by modality (± one paired standard error, prompts): image +0.050 ± 0.000 (2), "
          "text +0.050 ± 0.010 (2).") in table
  # The same means with the prompts moving apart: paired error larger than the rise.
  results["grpo"]["eval"]["prompts"]["total"] = [0.30, 0.0, 0.9, 0.55]
  report = report_lib.build_report(results, {}, ml_collections.ConfigDict())
  assert not report["targets"]["grpo_raises_judge_reward"]
