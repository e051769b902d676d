"""The `bon` task: Best-of-N picking with a scalar RM or a judge, and its report.

A `*ForSequenceClassification` folder scores every candidate
(`rl.model_reward.ModelReward`, the conversation RM training scores) and picks
the highest; a `*ForCausalLM` folder judges a knockout with both orders of
every match (`best_of_n.knockout`, greedy judgments as in `judge_eval.py`).

Writes `WORKDIR/bon_picks.jsonl` (per item: the candidates with their quality
and score, the pick, the picked / random / oracle quality) and
`WORKDIR/bon_report.json` (`best_of_n.bon_report`, the bad-row count,
latency). Text only: prompts and candidates are read as text (the `media`
section is not used yet).
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import numpy as np

from omni_rrm_jax.config.validate import check as check_settings
from omni_rrm_jax.core.multihost import written_by_one
from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.bon_items import BonItem, read_bon_items
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.eval.best_of_n import Match, bon_report, knockout, pick_by_scores
from omni_rrm_jax.eval.judge_eval import generate_judgments, verdict
from omni_rrm_jax.eval.latency import LatencyLog
from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.models.pretrained import from_pretrained
from omni_rrm_jax.rl.model_reward import ModelReward
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.sharding.rules import rules_from_config
from omni_rrm_jax.train.task_kind import kind_for_model

log = logging.getLogger(__name__)


def _architecture(path: str) -> str:
  config_json = os.path.join(path, "config.json")
  if not os.path.isfile(config_json):
    raise FileNotFoundError(f"config.model.path={path!r}: no config.json there")
  with open(config_json, encoding="utf-8") as f:
    architectures = json.load(f).get("architectures") or [""]
  return architectures[0]


def rm_picks(reward: ModelReward, items: list[BonItem]) -> tuple[list[int], list[list[float]]]:
  """(pick per item, scores per item's candidates) of a scalar RM."""
  prompts = [item.prompt for item in items for _ in item.candidates]
  completions = [c for item in items for c in item.candidates]
  flat = reward(prompts, completions)
  scores, start = [], 0
  for item in items:
    scores.append([float(s) for s in flat[start:start + len(item.candidates)]])
    start += len(item.candidates)
  return [pick_by_scores(s) for s in scores], scores


def judge_matches(model, encoder: ExampleEncoder, items: list[BonItem], **judge_kw):
  """A `knockout` judge: the matches' verdicts in both orders, judged in batches."""

  def judge(matches: list[Match]):
    records = [PreferenceRecord(id=f"{items[m.item].id}/{m.first}-{m.second}",
                                prompt=items[m.item].prompt,
                                response_a=items[m.item].candidates[m.first],
                                response_b=items[m.item].candidates[m.second], label="A")
               for m in matches]
    forward = generate_judgments(model, encoder, records, swap=False, **judge_kw)
    swapped = generate_judgments(model, encoder, records, swap=True, **judge_kw)
    return [(verdict(f)[0], verdict(s)[0]) for f, s in zip(forward, swapped)]

  return judge


def run(config, workdir: str) -> dict:
  from transformers import AutoTokenizer

  if not config.model.path:
    raise ValueError("config.model.path is empty: set --config.model.path=HF_FOLDER")
  if not config.data.path:
    raise ValueError("config.data.path is empty: set --config.data.path=FILE_OR_FOLDER")
  if config.data.format not in ("auto", "rewardbench2"):
    raise ValueError(f"data.format={config.data.format!r}: Best-of-N reads rows with "
                     "candidates (optional quality) or RewardBench 2's rows; use 'auto'")
  check_settings(config, process_count=jax.process_count(), device_count=jax.device_count())
  mesh = make_mesh(dict(config.mesh))
  rules = rules_from_config(dict(config.rules))
  counter = BadRecordCounter()
  items = list(read_bon_items(config.data.path, seed=config.data.seed, counter=counter,
                              strict=config.data.strict, limit=config.data.limit or None))
  if not items:
    raise ValueError(f"{config.data.path}: no usable Best-of-N items ({counter.summary()})")
  classifier = get_architecture(_architecture(config.model.path)).is_classifier
  d = config.data
  latency = LatencyLog()
  start = time.perf_counter()
  if classifier:
    reward = ModelReward(config.model.path, batch_size=d.batch_size, max_length=d.max_length,
                         bucket=d.buckets[0], tokenizer=config.tokenizer or None, mesh=mesh,
                         rules=rules, dtype=config.model.dtype)
    picks, scores = rm_picks(reward, items)
    matches = 0
  else:
    model = from_pretrained(config.model.path, mesh=mesh, rules=rules, dtype=config.model.dtype)
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or config.model.path)
    encoder = ExampleEncoder(tokenizer, d.max_length, kind_for_model(False).batch)
    judge = judge_matches(model, encoder, items, max_prompt_length=d.max_length,
                          max_new_tokens=config.judge.max_new_tokens, batch_size=d.batch_size,
                          eos_ids=[tokenizer.eos_token_id], pad_id=tokenizer.pad_token_id,
                          mesh=mesh, latency=latency)
    picks, matches = knockout([len(item.candidates) for item in items], judge)
    scores = [None] * len(items)
  seconds = time.perf_counter() - start
  result = bon_report(items, picks, ci_samples=config.report.ci_samples,
                      ci_seed=config.report.ci_seed)
  result.update(picker="rm" if classifier else "judge", model=config.model.path,
                data=config.data.path, bad_records=counter.summary(),
                seconds=seconds, matches=matches,
                candidates=int(sum(len(item.candidates) for item in items)))
  if classifier:  # one scoring pass over every candidate (compilations included)
    result["seconds_per_candidate"] = seconds / result["candidates"]
  else:
    result["latency_per_match"] = latency.summary()

  def write():
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "bon_picks.jsonl"), "w", encoding="utf-8") as f:
      for item, pick, item_scores in zip(items, picks, scores):
        quality = None if item.quality is None else np.asarray(item.quality)
        f.write(json.dumps({
            "id": item.id, "prompt": item.prompt, "subset": item.subset,
            "candidates": [{"text": c, "quality": None if quality is None else float(quality[i]),
                            "score": None if item_scores is None else item_scores[i]}
                           for i, c in enumerate(item.candidates)],
            "picked": pick,
            "picked_quality": None if quality is None else float(quality[pick]),
            "random_quality": None if quality is None else float(quality.mean()),
            "oracle_quality": None if quality is None else float(quality.max()),
        }, ensure_ascii=False) + "\n")
    with open(os.path.join(workdir, "bon_report.json"), "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)

  written_by_one("bon_report.json", write)
  log.info("bon: %s", json.dumps(result.get("overall", {})))
  return {"overall": result.get("overall"), "report": os.path.join(workdir, "bon_report.json")}
