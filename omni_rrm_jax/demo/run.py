"""The main job: data -> tokenizer -> scalar RM -> judge SFT -> judge GRPO -> eval -> export.

Each stage is an ordinary task of the project (`train.loop`, `rl.grpo_loop`,
`eval.run`) run with a config built here from `demo.config`, in its own folder
of the workdir. The data stage also writes a media-blind copy of the held-out
split (`synthetic/blank_media.py`: every media file blank, of the same shape),
which the eval stages score next to the real one. A finished stage leaves `<stage>/stage.json`; running the demo
again reuses it, and an unfinished training stage resumes from its last
checkpoint. The report (`report.json`), the results table (printed and in
`results.md`) and the training curves (`plots/*.png`) are written at the end.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time
from typing import Any, Callable

import numpy as np

from omni_rrm_jax.core.multihost import is_writer, written_by_one
from omni_rrm_jax.data.records import write_jsonl
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.demo import report as report_lib
from omni_rrm_jax.synthetic.blank_media import blind_records
from omni_rrm_jax.synthetic.corpus import corpus
from omni_rrm_jax.synthetic.omni import (generate_omni_pairs, is_swap_twin, task_weights,
                                        tasks_by_kind, weight_tasks)

log = logging.getLogger(__name__)

STAGES = ("data", "tokenizer", "rm", "sft", "eval_sft", "grpo", "eval_grpo", "export")


class Paths:
  """Where each stage reads and writes, under the workdir."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.data = os.path.join(workdir, "data")
    self.media = os.path.join(self.data, "media")
    self.train = os.path.join(self.data, "train.jsonl")
    # The judge SFT's: each training pair followed by its A/B-swapped twin.
    self.train_sft = os.path.join(self.data, "train_sft.jsonl")
    # The scalar RM's, when some tasks are weighted (data.rm_task_weights).
    self.train_rm = os.path.join(self.data, "train_rm.jsonl")
    self.eval = os.path.join(self.data, "eval.jsonl")
    # The held-out media records with blank media (the media-blind control).
    self.eval_blind = os.path.join(self.data, "eval_blind.jsonl")
    self.tokenizer = os.path.join(workdir, "tokenizer")

  def stage(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def hf(self, name: str) -> str:
    return os.path.join(self.workdir, name, "hf")


# --- Stages ----------------------------------------------------------------


def stage_data(cfg, paths: Paths) -> dict:
  """Seeded omni pairs, reconciled by two simulated teachers, as JSONL + media files."""
  kinds = [k.strip() for k in cfg.data.kinds.split(",") if k.strip()]
  tasks = tasks_by_kind(cfg.data.tasks)
  # Both checked before any work.
  weights = task_weights(cfg.data.sft_task_weights, kinds, tasks)
  rm_weights = task_weights(cfg.data.rm_task_weights, kinds, tasks,
                            setting="data.rm_task_weights")
  kw = dict(media_root=paths.media, kinds=kinds, teacher_noise=cfg.data.teacher_noise,
            tasks=tasks)
  train, train_stats = generate_omni_pairs(cfg.data.train_per_kind * len(kinds), cfg.data.seed,
                                           prefix="train", swap_twins=cfg.data.swap_twins, **kw)
  sft_counts = None
  if sft_has_own_file(cfg):
    # The twins teach the judge that the verdict follows the content, not the
    # position: a pair and its mirror share a batch; the weights give a task that
    # learns late more of the judge's steps (README: "What we tried").
    sft = weight_tasks(train, weights, cfg.data.seed) if weights else train
    write_jsonl(sft, paths.train_sft)
    sft_counts = _by_task(sft)
    train = [r for r in train if not is_swap_twin(r)]
  rm_counts = None
  if rm_weights:
    # The RM's own file; the tokenizer stage reads data/train.jsonl as generated.
    rm_train = weight_tasks(train, rm_weights, cfg.data.seed)
    write_jsonl(rm_train, paths.train_rm)
    rm_counts = _by_task(rm_train)
  # Held-out pairs carry their true labels: the teachers' noise is the training
  # data's, and at 15% it put the wrong label on 5 of 256 held-out pairs.
  evals, eval_stats = generate_omni_pairs(cfg.data.eval_per_kind * len(kinds), cfg.data.seed + 1,
                                          prefix="eval", **{**kw, "teacher_noise": 0.0})
  # Held-out text pairs never repeat a training pair (the generator splits
  # text pairs by a hash of their text); media pairs share their text but not
  # their media files.
  write_jsonl(train, paths.train)
  write_jsonl(evals, paths.eval)
  blind = blind_records(evals, paths.media)
  write_jsonl(blind, paths.eval_blind)
  count = lambda records: {k: sum(r.modality == k for r in records) for k in kinds}  # noqa: E731
  return {"train": count(train), "eval": count(evals),
          **({"train_sft_by_task": sft_counts} if sft_counts else {}),
          **({"train_rm_by_task": rm_counts} if rm_counts else {}),
          "eval_blind": {k: n for k, n in count(blind).items() if k != "text"},
          "reconciliation": {"train": train_stats, "eval": eval_stats}}


def _by_task(records) -> dict[str, int]:
  return dict(sorted(collections.Counter(r.subset for r in records).items()))


def sft_has_own_file(cfg) -> bool:
  """Whether the judge SFT trains on data/train_sft.jsonl (swap twins or task
  weights) rather than the RM's data/train.jsonl."""
  return bool(cfg.data.swap_twins or cfg.data.sft_task_weights.strip())


def stage_tokenizer(cfg, paths: Paths) -> dict:
  from omni_rrm_jax.data.readers import read_records

  records = list(read_records(paths.train, "native", media_root=paths.media))
  train_tiny_tokenizer(corpus(records), paths.tokenizer, vocab_size=cfg.data.tokenizer_vocab)
  return {"folder": paths.tokenizer, "vocab_size": cfg.data.tokenizer_vocab}


def _stage_config(stage_cfg, paths: Paths, *, model_path: str = "", eval_path: str = "",
                  train_path: str = ""):
  """A copy of a stage's task config with the workdir's files filled in (an eval
  task reads `eval_path`, default the held-out split)."""
  c = stage_cfg.copy_and_resolve_references()
  c.tokenizer = paths.tokenizer
  if model_path:
    c.model.path = model_path
  if "train_path" in c.data:
    c.data.update(train_path=train_path or paths.train, eval_path=paths.eval)
  else:
    c.data.path = eval_path or paths.eval
  c.data.media_root = paths.media
  return c


def sft_start(cfg, paths: Paths) -> str:
  """The folder the judge SFT starts from: the RM's (`sft_from_rm`: its towers
  already tell the media apart; the score head is left out, the LM head is the
  tied embedding), or none (a random init)."""
  return paths.hf("rm") if cfg.sft_from_rm else ""


def stage_train(task: str) -> Callable:
  def run_stage(cfg, paths: Paths) -> dict:
    from omni_rrm_jax.train.loop import run as train_run

    start = sft_start(cfg, paths) if task == "sft" else ""
    train_path = ""
    if task == "sft" and sft_has_own_file(cfg):
      train_path = _twin_file(paths)
    elif task == "rm" and cfg.data.rm_task_weights.strip():
      train_path = _own_file(paths.train_rm, "data.rm_task_weights")
    summary = train_run(_stage_config(cfg[task], paths, model_path=start,
                                      train_path=train_path), paths.stage(task))
    if summary.get("stopped_early"):
      raise SystemExit(f"the {task} stage was stopped; run the demo again to resume it")
    # Which of the data stage's files the stage trained on.
    return {**summary, "train_file": os.path.basename(train_path or paths.train)}
  return run_stage


def _own_file(path: str, settings: str) -> str:
  """`path`, a training file the data stage writes only when `settings` ask for it."""
  if not os.path.exists(path):
    raise SystemExit(f"{path} is missing: this workdir's data stage predates {settings}; "
                     "use a new --workdir")
  return path


def _twin_file(paths: Paths) -> str:
  return _own_file(paths.train_sft, "data.swap_twins / data.sft_task_weights")


def grpo_on_twins(cfg) -> bool:
  """Whether GRPO samples each training pair in the step of its A/B-swapped twin
  (`grpo.data.shuffle_block` 2 over data/train_sft.jsonl): a position-following
  verdict then earns as much as it loses within every step."""
  return cfg.grpo.data.shuffle_block > 1


def check_config(cfg) -> None:
  """Settings of several stages that must agree, checked before any stage runs."""
  if grpo_on_twins(cfg) and (cfg.grpo.data.shuffle_block != 2 or not cfg.data.swap_twins):
    raise SystemExit(f"grpo.data.shuffle_block={cfg.grpo.data.shuffle_block}: GRPO's blocks "
                     "are a pair and its A/B-swapped twin, so it must be 1 or 2, and 2 needs "
                     "data.swap_twins=True")


def stage_grpo(cfg, paths: Paths) -> dict:
  from omni_rrm_jax.rl.grpo_loop import run as grpo_run

  train_path = _twin_file(paths) if grpo_on_twins(cfg) else ""
  summary = grpo_run(_stage_config(cfg.grpo, paths, model_path=paths.hf("sft"),
                                   train_path=train_path), paths.stage("grpo"))
  if summary.get("stopped_early"):
    raise SystemExit("the grpo stage was stopped; run the demo again to resume it")
  return summary


def stage_eval(judge_stage: str) -> Callable:
  """Held-out pairs per modality: the scalar RM (once) and the judge of `judge_stage`,
  each on the real held-out split and on its media-blind copy (`<name>_blind`)."""
  def run_stage(cfg, paths: Paths) -> dict:
    from omni_rrm_jax.eval.run import run as eval_run

    splits = [("", paths.eval)]
    # Text-only data has no media to blank, and an empty file is no data set; a
    # workdir whose data stage predates the control has none (reported as not
    # measured).
    if os.path.exists(paths.eval_blind) and os.path.getsize(paths.eval_blind) > 0:
      splits.append(("_blind", paths.eval_blind))
    out = {}
    for name, stage in (("rm", "rm"), ("judge", judge_stage)):
      if name == "rm" and judge_stage != "sft":
        continue
      for suffix, data_path in splits:
        folder = os.path.join(paths.stage(f"eval_{judge_stage}"), name + suffix)
        t0 = time.perf_counter()
        eval_run(_stage_config(cfg.eval, paths, model_path=paths.hf(stage),
                               eval_path=data_path), folder)
        # What the blind control costs on top of the real evaluation.
        log.info("eval_%s: %s%s took %.1f s", judge_stage, name, suffix,
                 time.perf_counter() - t0)
        with open(os.path.join(folder, "eval_report.json"), encoding="utf-8") as f:
          out[name + suffix] = json.load(f)
    return out
  return run_stage


def stage_export(cfg, paths: Paths) -> dict:
  """Reloads the exported judge and RM and checks them against what was trained.

  The judge's folder is read by transformers (when torch is installed) and by
  `from_pretrained`; the logits of a held-out judge prompt must agree.
  """
  from omni_rrm_jax.demo.reload_check import reload_check

  del cfg
  return {"judge": reload_check(paths.hf("grpo"), paths.tokenizer, paths.eval),
          "rm": reload_check(paths.hf("rm"), paths.tokenizer, paths.eval)}


STAGE_FNS: dict[str, Callable[[Any, Paths], dict]] = {
    "data": stage_data,
    "tokenizer": stage_tokenizer,
    "rm": stage_train("rm"),
    "sft": stage_train("sft"),
    "eval_sft": stage_eval("sft"),
    "grpo": stage_grpo,
    "eval_grpo": stage_eval("grpo"),
    "export": stage_export,
}


# --- The job -----------------------------------------------------------------


def _load(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _dump(obj, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, default=_jsonable)
  os.replace(tmp, path)


def _jsonable(x):
  if isinstance(x, (np.generic, np.ndarray)):
    return x.tolist()
  return str(x)


def stage_header(name: str, cfg) -> str:
  """What a stage does and how big it is, for its console header."""
  kinds = [k.strip() for k in cfg.data.kinds.split(",") if k.strip()]
  g = cfg.grpo
  return {
      "data": (f"seeded pairs with real media ({', '.join(kinds)}), kept where two simulated "
               f"teachers agree: {cfg.data.train_per_kind} train and {cfg.data.eval_per_kind} "
               "held-out pairs per modality, and a media-blind copy of the held-out media "
               "pairs"),
      "tokenizer": f"byte-level BPE tokenizer, {cfg.data.tokenizer_vocab} tokens",
      "rm": (f"scalar Bradley-Terry RM on the Omni thinker: {cfg.rm.train.num_steps} steps x "
             f"{cfg.rm.data.batch_size} pairs"),
      "sft": (f"rubric judge SFT: {cfg.sft.train.num_steps} steps x {cfg.sft.data.batch_size} "
              "judgments"),
      "eval_sft": ("held-out accuracy per modality: the RM, and the judge in both A/B orders; "
                   "both again with blank media"),
      "grpo": (f"judge GRPO: {g.train.num_steps} steps x {g.rollout.prompts_per_step} prompts x "
               f"{g.rollout.num_generations} samples"),
      "eval_grpo": ("held-out accuracy per modality of the judge after GRPO, and with blank "
                    "media"),
      "export": "Hugging Face folders reloaded in transformers and compared",
  }[name]


def _accuracies(report: dict) -> str:
  return ", ".join(f"{m} {row['accuracy']:.0%}" for m, row in report["per_modality"].items())


def stage_result(name: str, result: dict) -> str:
  """A stage's headline numbers, one line (empty when it has none)."""
  try:
    if name == "data":
      return (f"{sum(result['train'].values())} train / {sum(result['eval'].values())} "
              "held-out pairs kept")
    if name == "rm":
      return f"held-out accuracy {result['eval']['accuracy']:.1%}"
    if name == "sft":
      return f"held-out judgment-token accuracy {result['eval']['token_accuracy']:.3f}"
    if name.startswith("eval_"):
      parts = [f"{who.replace('_blind', ' media-blind')}: {_accuracies(result[who])}"
               for who in ("rm", "judge", "rm_blind", "judge_blind") if who in result]
      return "; ".join(parts)
    if name == "grpo":
      before = result.get("eval_start", {}).get("reward/total_mean")
      after = result.get("eval", {}).get("reward/total_mean")
      return "" if before is None or after is None else (
          f"held-out reward {before:.3f} -> {after:.3f}")
    if name == "export":
      return ", ".join(f"{k} max |diff| vs transformers {v['transformers_max_abs_diff']:.1e}"
                       for k, v in result.items())
  except (KeyError, TypeError, AttributeError):
    return ""
  return ""


# Stages whose work is host-side files only: process 0 does it, the others wait
# and read its result. The training and evaluation stages run on every process.
_WRITER_STAGES = ("data", "tokenizer", "export")


def _say(text: str) -> None:
  if is_writer():
    print(text, flush=True)


def _run_stage(name: str, config, paths: Paths, marker: str) -> dict:
  if name in _WRITER_STAGES:
    written_by_one(f"the {name} stage", lambda: _dump(
        {"result": STAGE_FNS[name](config, paths), "seconds": 0.0}, marker))
    return _load(marker)["result"]
  return STAGE_FNS[name](config, paths)


def run(config, workdir: str) -> dict:
  """Runs (or resumes) every stage in `workdir`; returns the report.

  With several processes (one per host), every process runs this with the
  same workdir on a shared file system; process 0 writes the files.
  """
  check_config(config)
  paths = Paths(os.path.abspath(workdir))
  os.makedirs(paths.workdir, exist_ok=True)
  results, seconds = {}, {}
  t_job = time.perf_counter()
  for i, name in enumerate(STAGES, start=1):
    marker = os.path.join(paths.stage(name), "stage.json")
    done = _load(marker)
    if done is not None:
      _say(f"[{i}/{len(STAGES)}] {name}: done before, reused")
      results[name], seconds[name] = done["result"], done["seconds"]
      continue
    _say(f"[{i}/{len(STAGES)}] {name}: {stage_header(name, config)}")
    t0 = time.perf_counter()
    result = _run_stage(name, config, paths, marker)
    seconds[name] = round(time.perf_counter() - t0, 1)
    results[name] = result
    written_by_one(f"{name}/stage.json",
                   lambda: _dump({"result": result, "seconds": seconds[name]}, marker))
    line = stage_result(name, result)
    _say(f"[{i}/{len(STAGES)}] {name} done in {seconds[name]:.0f} s"
         + (f": {line}" if line else ""))
  report = report_lib.build_report(results, seconds, config)
  report["wall_seconds_this_run"] = round(time.perf_counter() - t_job, 1)

  def write_report():
    _dump(report, os.path.join(paths.workdir, "report.json"))
    report["plots"] = report_lib.plot_curves(paths.workdir, os.path.join(paths.workdir, "plots"),
                                             report)
    table = report_lib.results_table(report)
    with open(os.path.join(paths.workdir, "results.md"), "w", encoding="utf-8") as f:
      f.write(table + "\n")
    _dump(report, os.path.join(paths.workdir, "report.json"))
    print(table, flush=True)
    print(f"report: {os.path.join(paths.workdir, 'report.json')}", flush=True)

  written_by_one("report.json", write_report)
  return {"report": os.path.join(paths.workdir, "report.json"),
          "targets_met": report["targets"]["all_met"]}
