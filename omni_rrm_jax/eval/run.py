"""The `eval` task: a reward model or judge on any preference data, as a JSON report.

A `*ForSequenceClassification` folder is evaluated as a scalar RM (the chosen
response must score higher); a `*ForCausalLM` folder as a generative judge
(greedy judgments in both A/B orders, see `judge_eval.py`).

A multimodal scalar RM (Qwen2.5-VL, Qwen2.5-Omni thinker) sees each record's
images, video and audio as in training: the data workers decode them, and the
batch's media keys go to the model with the token ids. Patches and audio
frames are padded to `media.patch_buckets` / `media.audio_frame_buckets`;
`media.preprocess` overrides the preprocessing (set them as in training).
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import numpy as np
from flax import nnx

from omni_rrm_jax.assembly.media import media_spec
from omni_rrm_jax.config.validate import check as check_settings
from omni_rrm_jax.core.multihost import agree_max, allgather, written_by_one
from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.pipeline import make_dataset
from omni_rrm_jax.data.readers import read_records, resolve_format
from omni_rrm_jax.data.tokenize import INVALID_REASONS, ExampleEncoder
from omni_rrm_jax.eval.judge_eval import evaluate_judge
from omni_rrm_jax.eval.benchmarks import official_score
from omni_rrm_jax.eval.bootstrap import DEFAULT_SAMPLES
from omni_rrm_jax.eval.latency import LatencyLog
from omni_rrm_jax.eval.metrics import Outcome, predict, report
from omni_rrm_jax.core.batch_contract import MEDIA_KEYS, RM_BATCH
from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.models.pretrained import from_pretrained
from omni_rrm_jax.sharding.batch import host_rows, to_global
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.sharding.rules import rules_from_config
from omni_rrm_jax.train.task_kind import kind_for_model, rm_rewards

log = logging.getLogger(__name__)


def _side_rewards(label: str, r_chosen: float, r_rejected: float) -> tuple[float, float]:
  """(reward A, reward B) from the encoder's chosen / rejected rows (a tie's A
  is encoded as "chosen")."""
  return (r_rejected, r_chosen) if label == "B" else (r_chosen, r_rejected)


def evaluate_rm(model, encoder: ExampleEncoder, records, *, batch_size: int, buckets, mesh,
                rules, patch_buckets=(), audio_frame_buckets=(), tie_margin: float = 0.0,
                ci_samples: int = DEFAULT_SAMPLES, ci_seed: int = 0) -> dict:
  """Pairwise accuracy of a scalar RM, with and without ties.

  A pair is predicted a tie when |reward A - reward B| < `tie_margin`
  (`metrics.predict`); the accuracy without ties uses the sign alone. Records
  it cannot score (a response longer than `max_length`, bad or too long
  media) count as wrong in `accuracy` and are dropped from
  `accuracy_parsed_only`; `unscored` says why. Tie-labelled records are
  scored when the encoder has `score_ties`. With an encoder that has a
  `MediaSpec`, the batches' media keys (patches padded to `patch_buckets`,
  audio frames to `audio_frame_buckets`, default: the spec's) reach the model.

  Returns:
    `metrics.report` plus "unscored", "truncated", "latency" (per pair,
    `latency.LatencyLog`) and "outcomes" (the per-record `Outcome`s, for a
    benchmark's own score; not JSON).
  """
  graphdef, params = nnx.split(model)

  @jax.jit
  def score(params, batch):
    return rm_rewards(nnx.merge(graphdef, params), batch)

  n_proc = jax.process_count()
  if batch_size % n_proc:
    raise ValueError(f"data.batch_size={batch_size} is not divisible by {n_proc} processes")
  dataset = make_dataset(records, encoder, batch_size=batch_size // n_proc, buckets=buckets,
                         pad_id=encoder.tokenizer.pad_token_id, seed=0, shuffle=False,
                         num_epochs=1, process_index=jax.process_index(), process_count=n_proc,
                         agree=agree_max if n_proc > 1 else None,
                         patch_buckets=tuple(patch_buckets) if encoder.media else (),
                         audio_frame_buckets=tuple(audio_frame_buckets))
  outcomes, unscored, truncated = [], {}, 0
  latency, shapes_seen = LatencyLog(), set()
  for batch in dataset:
    device_batch = to_global({k: batch[k] for k in (*RM_BATCH.required, *MEDIA_KEYS)
                              if k in batch}, mesh, rules)
    shapes = tuple(sorted((k, v.shape) for k, v in device_batch.items()))
    start = time.perf_counter()
    rewards = jax.block_until_ready(score(params, device_batch))
    seconds = time.perf_counter() - start
    r_c, r_r = (host_rows(x) for x in rewards)
    # Every process sees every row's outcome, so each writes the same report.
    # (allgather moves integers, 32-bit ones between processes: the float32
    # rewards travel as their bits.)
    rewards_r2 = np.stack([r_c, r_r], 1).astype(np.float32).view(np.int32).astype(np.int64)
    rows_r6 = allgather(np.concatenate([
        np.stack([batch["index"], batch["valid"], batch["truncated"],
                  batch["invalid_reason"]], 1).astype(np.int64), rewards_r2], 1)).reshape(-1, 6)
    rows_r6 = np.concatenate([rows_r6[:, :4].astype(np.float64),
                              rows_r6[:, 4:].astype(np.int32).view(np.float32)], 1)
    latency.add(seconds, int(((rows_r6[:, 0] >= 0) & (rows_r6[:, 1] > 0)).sum()),
                compiled=shapes not in shapes_seen)
    shapes_seen.add(shapes)
    for index, valid, was_truncated, reason, reward_c, reward_r in rows_r6:
      if index < 0:
        continue
      record = records[int(index)]
      truncated += bool(was_truncated)
      common = dict(modality=record.modality, subset=record.subset, record_id=record.id,
                    group=record.group)
      if not valid:
        reason = INVALID_REASONS[int(reason)]
        unscored[reason] = unscored.get(reason, 0) + 1
        # Counted as wrong in the headline accuracy, like an unparseable judgment.
        outcomes.append((int(index), Outcome(record.label, None, **common)))
        continue
      reward_a, reward_b = _side_rewards(record.label, float(reward_c), float(reward_r))
      outcomes.append((int(index), Outcome(record.label, predict(reward_a, reward_b, tie_margin),
                                           predicted_no_tie=predict(reward_a, reward_b),
                                           rewards=(reward_a, reward_b), **common)))
  # In record order, so the bootstrap draws the same records whatever the process count.
  outcomes = [o for _, o in sorted(outcomes, key=lambda io: io[0])]
  result = report(outcomes, ci_samples=ci_samples, ci_seed=ci_seed)
  result["unscored"] = unscored
  result["truncated"] = truncated
  result["latency"] = latency.summary()
  result["outcomes"] = outcomes
  return result


def _data_folder(path: str) -> str:
  """Where media paths of a data file (or folder) resolve by default."""
  path = os.path.abspath(path)
  return path if os.path.isdir(path) else os.path.dirname(path)


def run(config, workdir: str) -> dict:
  from transformers import AutoTokenizer

  if not config.model.path:
    raise ValueError("config.model.path is empty: set --config.model.path=HF_FOLDER")
  if not config.data.path:
    raise ValueError("config.data.path is empty: set --config.data.path=FILE_OR_FOLDER")
  check_settings(config, process_count=jax.process_count(), device_count=jax.device_count())
  mesh = make_mesh(dict(config.mesh))
  rules = rules_from_config(dict(config.rules))
  model = from_pretrained(config.model.path, mesh=mesh, rules=rules, dtype=config.model.dtype)
  tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or config.model.path)
  counter = BadRecordCounter()
  records = list(read_records(config.data.path, config.data.format, counter=counter,
                              strict=config.data.strict, media_root=config.data.media_root or None,
                              limit=config.data.limit or None, seed=config.data.seed,
                              max_record_bytes=config.data.max_record_bytes))
  if not records:
    raise ValueError(f"{config.data.path}: no usable records ({counter.summary()})")
  # A sequence classifier is scored as a scalar RM, a causal LM as a judge.
  kind = kind_for_model(get_architecture(model.cfg.architecture).is_classifier)
  d = config.data
  patch_buckets = tuple(config.media.patch_buckets)
  # Media records go through the encoders with the same preprocessing as in
  # training (the `media` section: overrides, buckets); the judge's prompts too.
  media = media_spec(config.media, model.cfg, tokenizer,
                     root=d.media_root or _data_folder(d.path), model_path=config.model.path,
                     strict=d.strict)
  # A scalar RM scores tie-labelled pairs too (PandaLM, Omni-RewardBench), so
  # that a predicted tie can be right.
  encoder = ExampleEncoder(tokenizer, config.data.max_length, kind.batch, media=media,
                           score_ties=kind.classifier)
  ci = dict(ci_samples=config.report.ci_samples, ci_seed=config.report.ci_seed)
  if kind.classifier:
    result = evaluate_rm(model, encoder, records, batch_size=config.data.batch_size,
                         buckets=tuple(config.data.buckets), mesh=mesh, rules=rules,
                         patch_buckets=patch_buckets, tie_margin=config.report.tie_margin, **ci)
  else:
    result = evaluate_judge(model, encoder, records,
                            max_prompt_length=config.data.max_length,
                            max_new_tokens=config.judge.max_new_tokens,
                            batch_size=config.data.batch_size,
                            eos_ids=[tokenizer.eos_token_id], pad_id=tokenizer.pad_token_id,
                            mesh=mesh, patch_buckets=patch_buckets, **ci)
  fmt = resolve_format(config.data.path, config.data.format)
  result["benchmark"] = official_score(fmt, result.pop("outcomes"), **ci)
  result.update(kind="rm" if kind.classifier else "judge", model=config.model.path,
                data=config.data.path, format=fmt, records=len(records),
                bad_records=counter.summary(), skipped=dict(counter.skipped))
  def write():
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "eval_report.json"), "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)

  written_by_one("eval_report.json", write)
  log.info("eval: %s", json.dumps(result["overall"]))
  return {"overall": result["overall"], "report": os.path.join(workdir, "eval_report.json")}
