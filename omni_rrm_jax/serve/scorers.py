"""What the server runs: a scalar RM's rewards or a judge's generations.

Both split the work the same way: `encode(item)` builds one row on a request's
thread (tokens, media decoded), and `run(rows)` scores up to `max_batch_rows`
rows from any number of requests in one padded forward pass or sampler call
(the dynamic batcher's). The encoding and the scoring are the in-process ones:
`rl.model_reward.ModelReward` (GRPO's model reward) for an RM,
`eval.judge_eval` (the judge evaluation's prompts and sampler calls) for a judge.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import jax

from omni_rrm_jax.config.validate import batch_shards
from omni_rrm_jax.core.batch_contract import SFT_BATCH
from omni_rrm_jax.core.buckets import bucket_size
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.eval.judge_eval import generate_rows, judge_prompt, messages_prompt
from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.models.pretrained import from_pretrained
from omni_rrm_jax.rl.model_reward import ModelReward, ending_in_text, prompt_record
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.prompts import media_needs
from omni_rrm_jax.sampling.sampler import compile_count
from omni_rrm_jax.assembly.media import make_media_spec
from omni_rrm_jax.serve.bad_request import BadRequest
from omni_rrm_jax.serve.items import Item

def row_buckets(max_rows: int, shards: int) -> tuple[int, ...]:
  """Rows a model call is padded to: `shards`·2^k below `max_rows`, and `max_rows`.

  Padding every call to `max_rows` would cost a full batch for one row (on a
  CPU, compute grows with the rows); a few row buckets cost a few compilations.
  """
  out, b = [], max(shards, 1)
  while b < max_rows:
    out.append(b)
    b *= 2
  return (*out, max_rows)


# Request media arrive as absolute paths the server resolved itself
# (serve/media_refs.py checks the media root), so the encoders' root is "/".
_RESOLVED = "/"


def _has_media(messages: list[dict[str, Any]]) -> bool:
  return any(isinstance(m["content"], list) and any(p["type"] != "text" for p in m["content"])
             for m in messages)


def is_classifier(path: str) -> bool:
  """True for a `*ForSequenceClassification` folder (served as an RM)."""
  import json
  import os

  with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
    architectures = json.load(f).get("architectures") or [""]
  return get_architecture(architectures[0]).is_classifier


class RewardModelScorer:
  """A scalar RM: one reward per (prompt, response) item."""

  kind = "rm"

  def __init__(self, config, *, mesh, rules):
    sv, m = config.serve, config.media
    self.rm = ModelReward(config.model.path, batch_size=sv.max_batch_rows,
                          max_length=sv.max_length, bucket=sv.bucket,
                          tokenizer=config.tokenizer or None, mesh=mesh, rules=rules,
                          dtype=config.model.dtype, media_root=_RESOLVED,
                          patch_buckets=m.patch_buckets,
                          audio_frame_buckets=m.audio_frame_buckets,
                          media_overrides=m.preprocess)
    self._lock = threading.Lock()  # the encoder's counters are not thread-safe
    self.row_buckets = row_buckets(sv.max_batch_rows, batch_shards(
        config.mesh, config.rules, jax.device_count()))

  def encode(self, item: Item, where: str) -> dict[str, Any]:
    if item.pairwise:
      raise BadRequest(f"{where}: a scalar RM scores 'response' items, not pairs "
                       "(score each response, or serve a judge)")
    with self._lock:
      if self.rm.media is None:
        if _has_media(item.messages):
          raise BadRequest(f"{where}: this RM reads text only; send no media")
        return {"ids": self.rm.encode(item.messages, item.response)}
      row = self.rm.encode_example(item.messages, item.response)
    if isinstance(row, str):
      raise BadRequest(f"{where}: {row}", status=422)
    return row

  @staticmethod
  def size(row: dict[str, Any]) -> int:
    return len(row["ids"])

  def compiled(self) -> int:
    """Programs the forward pass has compiled (one per row / length / media bucket;
    jit's private cache size, for diagnostics)."""
    return self.rm._score._cache_size()  # pylint: disable=protected-access

  def run(self, rows: Sequence[dict[str, Any]]) -> list[float]:
    """Rewards of `rows` (one forward pass, padded to a row bucket)."""
    rows_per_pass = bucket_size(len(rows), self.row_buckets, "row")
    return [float(x) for x in self.rm.score_rows(rows, rows_per_pass)]


class JudgeScorer:
  """A generative judge: greedy judgments of (prompt, response A, response B)
  items, and chat completions."""

  kind = "judge"

  def __init__(self, config, *, mesh, rules):
    from transformers import AutoTokenizer

    path, sv, m = config.model.path, config.serve, config.media
    self.model = from_pretrained(path, mesh=mesh, rules=rules, dtype=config.model.dtype)
    if get_architecture(self.model.cfg.architecture).is_classifier:
      raise ValueError(f"{path}: a judge is a causal LM, got {self.model.cfg.architecture}")
    tok = AutoTokenizer.from_pretrained(config.tokenizer or path)
    spec = make_media_spec(self.model.cfg, tok, root=_RESOLVED, model_path=path,
                           overrides=dict(m.preprocess), patch_buckets=m.patch_buckets,
                           audio_frame_buckets=m.audio_frame_buckets)
    self.encoder = ExampleEncoder(tok, sv.max_length, SFT_BATCH, media=spec)
    self.tokenizer, self.mesh = tok, mesh
    self.max_prompt_length = sv.max_length
    self.row_buckets = row_buckets(sv.max_batch_rows, batch_shards(
        config.mesh, config.rules, jax.device_count()))
    self.patch_buckets = tuple(m.patch_buckets)
    self.max_new_tokens = config.judge.max_new_tokens
    self.params = SamplingParams(greedy=True, max_new_tokens=self.max_new_tokens)
    self._lock = threading.Lock()

  def _record(self, item: Item, where: str) -> PreferenceRecord:
    if _has_media(item.messages) and self.encoder.media is None:
      raise BadRequest(f"{where}: this judge reads text only; send no media")
    record = prompt_record(item.messages)
    if isinstance(record, str):
      raise BadRequest(f"{where}: {record} (at most one video and one audio clip)", status=422)
    return record

  def encode(self, item: Item, where: str) -> dict[str, Any]:
    """A judge prompt for a pair item, or a generation prompt for chat messages."""
    record = self._record(item, where)
    with self._lock:
      if item.pairwise:
        last = item.messages[-1]["content"]
        text = last if isinstance(last, str) else "".join(
            p["text"] for p in last if p["type"] == "text")
        pair = PreferenceRecord(id="serve", prompt=text, response_a=item.response_a,
                                response_b=item.response_b, label="A",
                                modality=record.modality, media=record.media)
        row = judge_prompt(self.encoder, pair, False, self.max_prompt_length)
      else:
        row = messages_prompt(self.encoder, record, ending_in_text(item.messages),
                              self.max_prompt_length)
    if isinstance(row, str):
      raise BadRequest(f"{where}: {row}", status=422)
    return row

  @staticmethod
  def size(row: dict[str, Any]) -> int:
    return len(row["prompt_ids"])  # prompt tokens; the generation is bounded apart

  @staticmethod
  def compiled() -> int:
    """Programs the sampler has compiled (one per row / length / media bucket)."""
    return compile_count()

  def run(self, rows: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Completion tokens of each row (one sampler call, padded to a row bucket)."""
    n = len(rows)
    padded = list(rows) + [rows[0]] * (bucket_size(n, self.row_buckets, "row") - n)
    needs = [max(len(r["prompt_ids"]) for r in padded),
             *(media_needs(padded) if self.encoder.media is not None else (0, 0))]
    tokens = generate_rows(self.model, self.encoder, padded, self.params, needs=needs,
                           eos_ids=(self.tokenizer.eos_token_id,),
                           pad_id=self.tokenizer.pad_token_id, mesh=self.mesh,
                           patch_buckets=self.patch_buckets)
    return tokens[:n]

  def decode(self, tokens: Sequence[int]) -> str:
    return self.tokenizer.decode(list(tokens), skip_special_tokens=True)


def make_scorer(config, *, mesh, rules):
  """The RM or judge scorer of `config.model.path` (by its architecture)."""
  cls = RewardModelScorer if is_classifier(config.model.path) else JudgeScorer
  return cls(config, mesh=mesh, rules=rules)
