"""The main job's report: per-modality results, the targets, a table and training curves."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

# Targets on held-out pairs (the main job's issue): scalar RM accuracy per
# modality; the SFT judge's accuracy and strict valid-JSON rate per modality.
RM_ACCURACY_TARGET = 0.95
JUDGE_ACCURACY_TARGET = 0.90
JUDGE_VALID_JSON_TARGET = 0.98


def _judge_rows(judge_report: Mapping[str, Any]) -> dict[str, dict[str, float]]:
  """Per-modality judge accuracy, valid-JSON rate and A/B position consistency."""
  rows = {}
  for modality, s in judge_report.get("per_modality", {}).items():
    rows[modality] = {"accuracy": s["accuracy"],
                      "valid_json_rate": s.get("valid_json_rate"),
                      "position_consistency": s.get("position_consistency")}
  return rows


def _grpo_rewards(summary: Mapping[str, Any]) -> dict[str, dict[str, float]]:
  """Held-out mean rewards (total and per function) at the start and end of GRPO."""
  start, end = summary.get("eval_start", {}), summary.get("eval", {})
  keys = sorted(k for k in start if k.startswith("reward/") and k.endswith("_mean"))
  return {k[len("reward/"):-len("_mean")]: {"before": start[k], "after": end.get(k)}
          for k in keys}


def build_report(results: Mapping[str, Any], seconds: Mapping[str, float], config) -> dict:
  """Collects the stages' results into one report with the targets checked."""
  rm = {m: s["accuracy"] for m, s in results["eval_sft"]["rm"]["per_modality"].items()}
  sft = _judge_rows(results["eval_sft"]["judge"])
  grpo = _judge_rows(results["eval_grpo"]["judge"])
  rewards = _grpo_rewards(results["grpo"])
  total = rewards.get("total", {})
  acc_sft = results["eval_sft"]["judge"]["overall"]["accuracy"]
  acc_grpo = results["eval_grpo"]["judge"]["overall"]["accuracy"]
  targets = {
      "rm_accuracy_per_modality": {m: a >= RM_ACCURACY_TARGET for m, a in rm.items()},
      "judge_accuracy_per_modality": {m: r["accuracy"] >= JUDGE_ACCURACY_TARGET
                                      for m, r in sft.items()},
      "judge_valid_json_per_modality": {
          m: (r["valid_json_rate"] or 0.0) >= JUDGE_VALID_JSON_TARGET for m, r in sft.items()},
      "grpo_raises_judge_reward": (total.get("after") is not None
                                   and total["after"] > total["before"]),
      "grpo_keeps_accuracy": acc_grpo >= acc_sft,
  }
  flat = [v for t in targets.values() for v in (t.values() if isinstance(t, dict) else [t])]
  targets["all_met"] = all(flat)
  return {
      "config": json.loads(config.to_json_best_effort()),
      "data": results["data"],
      "rm_accuracy": rm,
      "judge_sft": sft,
      "judge_grpo": grpo,
      "judge_accuracy_overall": {"sft": acc_sft, "grpo": acc_grpo},
      "grpo_rewards": rewards,
      "train": {name: {k: results[name].get(k) for k in ("step", "train_compiles",
                                                         "batch_shapes", "eval")}
                for name in ("rm", "sft")},
      "export": results["export"],
      "seconds": dict(seconds),
      "total_seconds": round(sum(seconds.values()), 1),
      "targets": targets,
  }


def _pct(x) -> str:
  return "-" if x is None else f"{100 * x:.1f}%"


def _mark(ok: bool) -> str:
  return "" if ok else " (below target)"


def results_table(report: Mapping[str, Any]) -> str:
  """The printed results: one row per modality, then GRPO rewards, time and targets."""
  t = report["targets"]
  lines = ["| modality | pairs train/eval | scalar RM acc | judge acc SFT | valid JSON SFT "
           "| A/B consistency SFT | judge acc GRPO | valid JSON GRPO | A/B consistency GRPO |",
           "|---|---|---|---|---|---|---|---|---|"]
  for m in sorted(report["judge_sft"]):
    s, g = report["judge_sft"][m], report["judge_grpo"].get(m, {})
    rm = report["rm_accuracy"].get(m)
    lines.append(
        f"| {m} | {report['data']['train'].get(m, 0)}/{report['data']['eval'].get(m, 0)} "
        f"| {_pct(rm)}{_mark(t['rm_accuracy_per_modality'].get(m, False))} "
        f"| {_pct(s['accuracy'])}{_mark(t['judge_accuracy_per_modality'][m])} "
        f"| {_pct(s['valid_json_rate'])}{_mark(t['judge_valid_json_per_modality'][m])} "
        f"| {_pct(s['position_consistency'])} | {_pct(g.get('accuracy'))} "
        f"| {_pct(g.get('valid_json_rate'))} | {_pct(g.get('position_consistency'))} |")
  lines.append("")
  lines.append("| GRPO held-out reward | before | after |")
  lines.append("|---|---|---|")
  for name, r in report["grpo_rewards"].items():
    after = "-" if r["after"] is None else f"{r['after']:.3f}"
    lines.append(f"| {name} | {r['before']:.3f} | {after} |")
  rec = report["data"]["reconciliation"]["train"]
  lines.append("")
  lines.append(f"Teacher reconciliation (train): {rec.get('generated')} generated, "
               f"{rec.get('kept')} kept, {rec.get('generated', 0) - rec.get('kept', 0)} "
               "filtered out.")
  lines.append("Stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                             report["seconds"].items())
               + f"; total {report['total_seconds']:.0f} s.")
  lines.append("Targets: " + ("all met." if t["all_met"] else "NOT all met: " + ", ".join(
      _unmet(t))))
  return "\n".join(lines)


def _unmet(targets: Mapping[str, Any]) -> list[str]:
  out = []
  for name, value in targets.items():
    if name == "all_met":
      continue
    if isinstance(value, dict):
      out += [f"{name}[{k}]" for k, ok in value.items() if not ok]
    elif not value:
      out.append(name)
  return out


def _history(workdir: str, stage: str) -> list[dict]:
  path = os.path.join(workdir, stage, "summary.json")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return json.load(f).get("history", [])


# stage -> (title, [(metric key, label)])
CURVES = {
    "rm": ("Scalar RM (Bradley-Terry)", [("loss", "loss"), ("accuracy", "pair accuracy")]),
    "sft": ("Judge SFT", [("loss", "loss"), ("token_accuracy", "token accuracy")]),
    "grpo": ("Judge GRPO", [("reward/total_mean", "total reward"),
                            ("reward/judge_format_mean", "format"),
                            ("reward/judge_content_mean", "content"),
                            ("reward/judge_rubric_mean", "rubric")]),
}


def plot_curves(workdir: str, out_dir: str) -> list[str]:
  """One PNG of training curves per stage, from each stage's `summary.json` history."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  os.makedirs(out_dir, exist_ok=True)
  written = []
  for stage, (title, metrics) in CURVES.items():
    history = _history(workdir, stage)
    series = [(label, [h["step"] for h in history if key in h],
               [h[key] for h in history if key in h]) for key, label in metrics]
    series = [s for s in series if s[1]]
    if not series:
      continue
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for label, steps, values in series:
      ax.plot(steps, values, label=label)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, f"{stage}.png")
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
  return written
