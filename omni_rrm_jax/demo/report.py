"""The main job's report: per-modality results, the targets, a table and training curves."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from omni_rrm_jax.core.standard_error import binomial_se, mean_se, paired_change

# Targets on held-out pairs (the main job's issue): scalar RM accuracy per
# modality; the SFT judge's accuracy, strict valid-JSON rate and A/B position
# consistency (the same verdict for a pair and its swapped twin) per modality;
# and the media-blind control: on held-out pairs whose media are blank, the RM
# and the SFT judge must fall to (near) chance, or a task is solvable from its
# words alone.
RM_ACCURACY_TARGET = 0.95
JUDGE_ACCURACY_TARGET = 0.90
JUDGE_VALID_JSON_TARGET = 0.98
JUDGE_CONSISTENCY_TARGET = 0.90
BLIND_ACCURACY_MAX = 0.60


def _accuracy_row(summary: Mapping[str, Any]) -> dict[str, Any]:
  """An accuracy with its binomial standard error over the pairs it counts."""
  count = summary.get("count")
  return {"accuracy": summary["accuracy"], "count": count,
          "accuracy_se": None if count is None else binomial_se(summary["accuracy"], count)}


def _rm_rows(rm_report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  return {m: _accuracy_row(s) for m, s in rm_report.get("per_modality", {}).items()}


def _judge_rows(judge_report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """Per-modality judge accuracy (with its standard error), valid-JSON rate and A/B
  position consistency."""
  rows = {}
  for modality, s in judge_report.get("per_modality", {}).items():
    rows[modality] = dict(_accuracy_row(s), valid_json_rate=s.get("valid_json_rate"),
                          position_consistency=s.get("position_consistency"))
  return rows


def _blind_rows(eval_result: Mapping[str, Any], key: str, modalities, rows_fn
                ) -> dict[str, dict[str, Any] | None]:
  """The media-blind accuracies of the eval stage's `key` ("rm_blind" or
  "judge_blind") per modality; None where not measured, as for text, which
  has no media to blank."""
  measured = rows_fn(eval_result[key]) if key in eval_result else {}
  return {m: measured.get(m) for m in modalities}


def _grpo_rewards(summary: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
  """Held-out mean rewards (total and per function) at the start and end of GRPO,
  each with the standard error of the mean over its samples."""
  start, end = summary.get("eval_start", {}), summary.get("eval", {})
  keys = sorted(k for k in start if k.startswith("reward/") and k.endswith("_mean"))

  def se(metrics, key):
    std = metrics.get(key[:-len("_mean")] + "_std")
    n = metrics.get("num_completions")
    return None if std is None or n is None else mean_se(std, n)

  out = {}
  for k in keys:
    name = k[len("reward/"):-len("_mean")]
    paired = paired_change(start.get("prompts", {}), end.get("prompts", {}), name)
    out[name] = {"before": start[k], "before_se": se(start, k), "after": end.get(k),
                 "after_se": se(end, k),
                 "change_se_paired": None if paired is None else paired["se"],
                 "paired_prompts": None if paired is None else paired["prompts"]}
  return out


def _prompts_of(prompts: Mapping[str, Any], modality: str) -> dict[str, list]:
  """The per-prompt lists of the prompts of one modality."""
  keep = [m == modality for m in prompts.get("modality", [])]
  return {k: [v for v, k_ in zip(values, keep) if k_] for k, values in prompts.items()}


def _grpo_change_by_modality(summary: Mapping[str, Any]) -> dict[str, dict | None]:
  """The total held-out reward's paired change per modality of the prompts."""
  start = summary.get("eval_start", {}).get("prompts", {})
  end = summary.get("eval", {}).get("prompts", {})
  modalities = sorted(set(start.get("modality", [])))
  return {m: paired_change(_prompts_of(start, m), _prompts_of(end, m), "total")
          for m in modalities}


def _independent_two_se(reward: Mapping[str, Any]) -> float | None:
  """Two standard errors of a held-out reward's change as if the two means were
  of independent samples (their errors added in quadrature); None when either
  is unknown."""
  se_a, se_b = reward.get("after_se"), reward.get("before_se")
  if se_a is None or se_b is None:
    return None
  return 2.0 * (se_a ** 2 + se_b ** 2) ** 0.5


def _two_se_of_change(reward: Mapping[str, Any]) -> float | None:
  """Two standard errors of a held-out reward's change: paired by prompt when
  both evaluations' per-prompt rewards are known (they sample the same prompts
  from the same keys, `core/standard_error.py:paired_change`), otherwise the
  independent-samples bound."""
  if reward.get("change_se_paired") is not None:
    return 2.0 * reward["change_se_paired"]
  return _independent_two_se(reward)


def _raised_by_two_se(reward: Mapping[str, Any]) -> bool:
  """Whether the held-out reward rose by more than two standard errors of the change."""
  threshold = _two_se_of_change(reward)
  if reward.get("after") is None or reward.get("before") is None or threshold is None:
    return False
  return reward["after"] - reward["before"] > threshold


def _change(reward: Mapping[str, Any]) -> str:
  """The rise of a held-out reward."""
  if reward.get("after") is None:
    return "-"
  return f"{reward['after'] - reward['before']:+.3f}"


def _threshold(value: float | None) -> str:
  return "-" if value is None else f"{value:.3f}"


def _blind_ok(row: Mapping[str, Any] | None) -> bool:
  return row is not None and row["accuracy"] <= BLIND_ACCURACY_MAX


def build_report(results: Mapping[str, Any], seconds: Mapping[str, float], config) -> dict:
  """Collects the stages' results into one report with the targets checked.

  Every accuracy is a row {"accuracy", "accuracy_se", "count"} (binomial
  standard error over `count` pairs); every GRPO reward carries the standard
  error of its mean. `blind` holds the media-blind control's rows per
  modality, None for text (no media) and for a control not measured.
  """
  rm = _rm_rows(results["eval_sft"]["rm"])
  sft = _judge_rows(results["eval_sft"]["judge"])
  grpo = _judge_rows(results["eval_grpo"]["judge"])
  media = [m for m in sorted(rm) if m != "text"]
  blind = {"rm": _blind_rows(results["eval_sft"], "rm_blind", sorted(rm), _rm_rows),
           "judge_sft": _blind_rows(results["eval_sft"], "judge_blind", sorted(sft),
                                    _judge_rows),
           "judge_grpo": _blind_rows(results["eval_grpo"], "judge_blind", sorted(grpo),
                                     _judge_rows)}
  rewards = _grpo_rewards(results["grpo"])
  total = rewards.get("total", {})
  overall = {stage: _accuracy_row(results[f"eval_{stage}"]["judge"]["overall"])
             for stage in ("sft", "grpo")}
  targets = {
      "rm_accuracy_per_modality": {m: r["accuracy"] >= RM_ACCURACY_TARGET
                                   for m, r in rm.items()},
      "judge_accuracy_per_modality": {m: r["accuracy"] >= JUDGE_ACCURACY_TARGET
                                      for m, r in sft.items()},
      "judge_valid_json_per_modality": {
          m: (r["valid_json_rate"] or 0.0) >= JUDGE_VALID_JSON_TARGET for m, r in sft.items()},
      "judge_position_consistency_per_modality": {
          m: (r["position_consistency"] or 0.0) >= JUDGE_CONSISTENCY_TARGET
          for m, r in sft.items()},
      "media_blind_rm_per_modality": {m: _blind_ok(blind["rm"].get(m)) for m in media},
      "media_blind_judge_per_modality": {m: _blind_ok(blind["judge_sft"].get(m))
                                         for m in media},
      "grpo_raises_judge_reward": _raised_by_two_se(total),
      "grpo_keeps_accuracy": overall["grpo"]["accuracy"] >= overall["sft"]["accuracy"],
  }
  flat = [v for t in targets.values() for v in (t.values() if isinstance(t, dict) else [t])]
  targets["all_met"] = all(flat)
  return {
      "config": json.loads(config.to_json_best_effort()),
      "data": results["data"],
      "rm": rm,
      "judge_sft": sft,
      "judge_grpo": grpo,
      "blind": blind,
      "judge_accuracy_overall": overall,
      "grpo_rewards": rewards,
      "grpo_change_by_modality": _grpo_change_by_modality(results["grpo"]),
      "train": {name: {k: results[name].get(k) for k in ("step", "train_compiles",
                                                         "batch_shapes", "eval", "train_file")}
                for name in ("rm", "sft")},
      "export": results["export"],
      "seconds": dict(seconds),
      "total_seconds": round(sum(seconds.values()), 1),
      "targets": targets,
  }


def _pct(x) -> str:
  return "-" if x is None else f"{100 * x:.1f}%"


def pct_se(row: Mapping[str, Any] | None) -> str:
  """An accuracy row as "65.6% ± 8.4" (the standard error in points), "-" when absent."""
  if row is None:
    return "-"
  if row.get("accuracy_se") is None:
    return _pct(row["accuracy"])
  return f"{_pct(row['accuracy'])} ± {100 * row['accuracy_se']:.1f}"


def _mean_se(mean, se) -> str:
  if mean is None:
    return "-"
  return f"{mean:.3f}" if se is None else f"{mean:.3f} ± {se:.3f}"


def _mark(ok: bool, note: str = "below target") -> str:
  return "" if ok else f" ({note})"


def _blind_cell(report: Mapping[str, Any], who: str, m: str, target: str | None) -> str:
  if m == "text":
    return "n/a"
  row = report["blind"][who].get(m)
  if row is None:
    return "- (not measured)"
  if target is None:
    return pct_se(row)
  return pct_se(row) + _mark(report["targets"][target].get(m, False), "above control limit")


def results_table(report: Mapping[str, Any]) -> str:
  """The printed results: one row per modality, then GRPO rewards, time and targets.

  Accuracies are printed with their standard errors ("65.6% ± 8.4"); the
  media-blind columns are the same held-out pairs with blank media.
  """
  t = report["targets"]
  lines = ["| modality | pairs train/eval | scalar RM acc | RM media-blind | judge acc SFT "
           "| judge media-blind SFT | valid JSON SFT | A/B consistency SFT | judge acc GRPO "
           "| judge media-blind GRPO | valid JSON GRPO | A/B consistency GRPO |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for m in sorted(report["judge_sft"]):
    s, g = report["judge_sft"][m], report["judge_grpo"].get(m)
    rm = report["rm"].get(m)
    lines.append(
        f"| {m} | {report['data']['train'].get(m, 0)}/{report['data']['eval'].get(m, 0)} "
        f"| {pct_se(rm)}{_mark(t['rm_accuracy_per_modality'].get(m, False))} "
        f"| {_blind_cell(report, 'rm', m, 'media_blind_rm_per_modality')} "
        f"| {pct_se(s)}{_mark(t['judge_accuracy_per_modality'][m])} "
        f"| {_blind_cell(report, 'judge_sft', m, 'media_blind_judge_per_modality')} "
        f"| {_pct(s['valid_json_rate'])}{_mark(t['judge_valid_json_per_modality'][m])} "
        f"| {_pct(s['position_consistency'])}"
        f"{_mark(t['judge_position_consistency_per_modality'][m])} | {pct_se(g)} "
        f"| {_blind_cell(report, 'judge_grpo', m, None)} "
        f"| {_pct((g or {}).get('valid_json_rate'))} "
        f"| {_pct((g or {}).get('position_consistency'))} |")
  lines.append("")
  lines.append(f"Media-blind: the same held-out pairs with blank media of the same shape; at "
               f"most {BLIND_ACCURACY_MAX:.0%} means the task needs its media (text has none: "
               "n/a). ± is one standard error.")
  lines.append("")
  lines.append("| GRPO held-out reward | before | after | change | two standard errors, "
               "paired by prompt | two standard errors, independent samples |")
  lines.append("|---|---|---|---|---|---|")
  for name, r in report["grpo_rewards"].items():
    paired = r.get("change_se_paired")
    lines.append(f"| {name} | {_mean_se(r['before'], r.get('before_se'))} "
                 f"| {_mean_se(r['after'], r.get('after_se'))} | {_change(r)} "
                 f"| {_threshold(None if paired is None else 2 * paired)} "
                 f"| {_threshold(_independent_two_se(r))} |")
  by_modality = report.get("grpo_change_by_modality") or {}
  if by_modality:
    lines.append("")
    lines.append("Change of the total reward by modality (± one paired standard error, "
                 "prompts): " + ", ".join(
                     f"{m} {c['change']:+.3f} ± {_threshold(c['se'])} ({c['prompts']})"
                     for m, c in by_modality.items() if c is not None) + ".")
  lines.append("")
  lines.append("A change counts when it exceeds two standard errors paired by prompt (the "
               "same prompts, each sampled from the same key before and after); the "
               "independent-samples column ignores that pairing.")
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
  """Held-out accuracy per modality: RM, judge after SFT and after GRPO, and the
  media-blind control of the RM and the SFT judge, with the targets."""
  acc = lambda rows: {m: r["accuracy"] for m, r in rows.items() if r}  # noqa: E731
  modalities = sorted(report.get("rm", {}))
  blind = report.get("blind", {})
  bars = [("scalar RM", acc(report.get("rm", {}))),
          ("judge SFT", acc(report.get("judge_sft", {}))),
          ("judge GRPO", acc(report.get("judge_grpo", {}))),
          ("RM media-blind", acc(blind.get("rm", {}))),
          ("judge SFT media-blind", acc(blind.get("judge_sft", {})))]
  width = 0.8 / len(bars)
  for i, (label, values) in enumerate(bars):
    xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(modalities))]
    ax.bar(xs, [values.get(m, 0.0) for m in modalities], width, label=label,
           hatch="//" if "blind" in label else None)
  ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
  ax.axhline(RM_ACCURACY_TARGET, color="C0", linestyle="--", linewidth=1, label="RM target")
  ax.axhline(JUDGE_ACCURACY_TARGET, color="C1", linestyle="--", linewidth=1,
             label="judge target")
  ax.axhline(BLIND_ACCURACY_MAX, color="C3", linestyle="-.", linewidth=1,
             label="media-blind limit")
  ax.set_xticks(range(len(modalities)), modalities)
  # The legend in a band above 100%, where no bar reaches.
  ax.set_ylim(0, 1.5)
  ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
  ax.set_ylabel("held-out accuracy")
  ax.set_title("Held-out accuracy per modality")
  ax.legend(fontsize=7, loc="upper center", ncol=3, frameon=False)


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
