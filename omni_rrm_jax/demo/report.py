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


def _metric_rows(workdir: str, stage: str) -> list[dict]:
  """The stage's `metrics.jsonl` rows (train and eval), or its summary's history."""
  path = os.path.join(workdir, stage, "metrics.jsonl")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return [json.loads(line) for line in f if line.strip()]
  path = os.path.join(workdir, stage, "summary.json")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [dict(r, split="train") for r in json.load(f).get("history", [])]


def smooth(values: list[float], weight: float = 0.8) -> list[float]:
  """An exponential moving average, debiased at the start (as TensorBoard draws)."""
  out, avg = [], 0.0
  for i, v in enumerate(values, start=1):
    avg = weight * avg + (1 - weight) * v
    out.append(avg / (1 - weight ** i))
  return out


def _series(rows: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
  picked = [r for r in rows if r.get("split", "train") == split and r.get(key) is not None]
  return [r["step"] for r in picked], [float(r[key]) for r in picked]


# stage -> (title, y label, [(metric key, label)]); a panel per metric.
PANELS = {
    "rm": ("Scalar RM", [("loss", "Bradley-Terry loss (nats)"),
                         ("accuracy", "pair accuracy")]),
    "sft": ("Judge SFT", [("loss", "token cross-entropy (nats)"),
                          ("token_accuracy", "judgment-token accuracy")]),
    "grpo": ("Judge GRPO", [("reward/total_mean", "reward"),
                            ("reward/judge_format_mean", "reward"),
                            ("reward/judge_content_mean", "reward"),
                            ("reward/judge_rubric_mean", "reward")]),
}


def _draw_metric(ax, rows: list[dict], key: str, label: str, color: str) -> bool:
  """Train values faint, their smoothed curve, held-out values as markers."""
  steps, values = _series(rows, "train", key)
  eval_steps, eval_values = _series(rows, "eval", key)
  if not steps and not eval_steps:
    return False
  if steps:
    ax.plot(steps, values, color=color, alpha=0.25, linewidth=1)
    ax.plot(steps, smooth(values), color=color, linewidth=2, label=f"{label} (train, smoothed)")
  if eval_steps:
    ax.plot(eval_steps, eval_values, "o--", color=color, markersize=5,
            label=f"{label} (held out)")
  return True


def _draw_panel(ax, stage: str, title: str, rows: list[dict], group) -> None:
  for i, (key, label) in enumerate(group):
    name = key.removeprefix("reward/").removesuffix("_mean") if stage == "grpo" else label
    _draw_metric(ax, rows, key, name, f"C{i}")
  ax.set_title(title)
  ax.set_xlabel("step")
  ax.set_ylabel(group[0][1])
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


def _draw_modalities(ax, report: Mapping[str, Any]) -> None:
  """Held-out accuracy per modality: RM, judge after SFT and after GRPO, with targets."""
  modalities = sorted(report.get("rm_accuracy", {}))
  bars = [("scalar RM", report.get("rm_accuracy", {}), RM_ACCURACY_TARGET),
          ("judge SFT", {m: r["accuracy"] for m, r in report.get("judge_sft", {}).items()},
           JUDGE_ACCURACY_TARGET),
          ("judge GRPO", {m: r["accuracy"] for m, r in report.get("judge_grpo", {}).items()},
           None)]
  width = 0.8 / len(bars)
  for i, (label, values, _) in enumerate(bars):
    xs = [j + (i - 1) * width for j in range(len(modalities))]
    ax.bar(xs, [values.get(m, 0.0) for m in modalities], width, label=label)
  ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
  ax.axhline(RM_ACCURACY_TARGET, color="C0", linestyle="--", linewidth=1, label="RM target")
  ax.axhline(JUDGE_ACCURACY_TARGET, color="C1", linestyle="--", linewidth=1,
             label="judge target")
  ax.set_xticks(range(len(modalities)), modalities)
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("held-out accuracy")
  ax.set_title("Held-out accuracy per modality")
  ax.legend(fontsize=7, loc="lower right")


def plot_curves(workdir: str, out_dir: str, report: Mapping[str, Any] | None = None
                ) -> list[str]:
  """Training curves per stage (`<stage>.png`) and `summary.png`, which holds every
  stage's curves and, given the report, the held-out accuracy per modality.

  Train values are drawn faint with their smoothed curve over them; held-out
  values (each evaluation) are markers on the same axes.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  os.makedirs(out_dir, exist_ok=True)
  written = []
  panels = []  # (stage, title, [(key, label)], y label) of the summary figure
  for stage, (title, metrics) in PANELS.items():
    rows = _metric_rows(workdir, stage)
    present = [(k, label) for k, label in metrics if _series(rows, "train", k)[0]
               or _series(rows, "eval", k)[0]]
    if not present:
      continue
    groups = [[m] for m in present] if stage != "grpo" else [present]
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.5), dpi=100,
                             squeeze=False)
    for ax, group in zip(axes[0], groups):
      _draw_panel(ax, stage, title, rows, group)
    fig.tight_layout()
    path = os.path.join(out_dir, f"{stage}.png")
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    panels += [(stage, title, rows, g) for g in groups]
  if panels:
    extra = 1 if report else 0
    cols = 3
    n = len(panels) + extra
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(15, 3.6 * ((n + 2) // 3)),
                             dpi=100, squeeze=False)
    flat = list(axes.flat)
    for ax, (stage, title, rows, group) in zip(flat, panels):
      _draw_panel(ax, stage, title, rows, group)
    if report:
      _draw_modalities(flat[len(panels)], report)
    for ax in flat[n:]:
      ax.axis("off")
    fig.tight_layout()
    path = os.path.join(out_dir, "summary.png")
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
  return written
