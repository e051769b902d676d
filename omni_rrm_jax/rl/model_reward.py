"""A scalar reward model as a GRPO reward function, scored in batches on device.

  rm = ModelReward("/runs/rm/hf", batch_size=16, max_length=1024, mesh=mesh)
  scores = rm(prompts, completions)      # list[float], the RM's logit per completion

The folder is any `*ForSequenceClassification` Hugging Face checkpoint with one
label (ours: a `rm` run's `WORKDIR/hf` export). Each (prompt, completion) is
the conversation the RM was trained on (`data.templates.rm_messages`: the
prompt as the user turn, the completion as the assistant turn), tokenized as
`data.tokenize.ExampleEncoder` does for RM training; a prompt too long for
`max_length` loses its oldest content first, as in training. Sequences are
right-padded into length buckets and fixed-size batches, so a run compiles
a few shapes only.

A text RM is text only: media parts of a prompt are dropped. A multimodal RM
(Qwen2.5-VL, the Qwen2.5-Omni thinker) sees them as in RM training: the
prompt's image / video / audio parts (`{"type": "image", "path": ...}`, as
`data.templates.media_parts` writes them; paths under `media_root`) are
decoded with the RM's `MediaSpec` (`ExampleEncoder.prepare_prompt`: the same
checks and placeholder expansion), each row carries its media arrays
(`media_batching.example_arrays`, patches and audio frames padded to the
buckets by `collate_media`), and the batch's media keys reach the model
through `models.media_inputs`, as `train.step.rm_rewards` feeds them. Text
prompts go the same way (as text records do in RM training). The media
tokens and the template's framing are never cut: the user text, then the
completion's beginning give way.

A prompt whose media cannot be used (a missing or corrupt file, a path
escaping the media root, too many patches or frames, audio for a vision-only
RM, media and framing longer than `max_length`) does not fail the call: its
completions all score the reward's minimum (0.0; the reward convention of
`rewards.contract` for a sample it cannot score), so within a GRPO group the
model reward adds no signal, and the prompt is counted by its
`data.tokenize.INVALID_REASONS` name in `unscored` (as the GRPO loop counts
prompts it skips). A media placeholder token inside a completion (a
completion that spells out "<|IMAGE|>") would steal media features; it is
dropped from the completion and counted in `stripped`.

It lives in `rl/` rather than `rewards/` because it runs a JAX model, and
`rewards/` stays JAX-free.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_rrm_jax.core.batch_contract import HOST_ONLY, RM_BATCH
from omni_rrm_jax.core.buckets import round_up
from omni_rrm_jax.core.multihost import agree_max
from omni_rrm_jax.data import media_batching
from omni_rrm_jax.data.records import PreferenceRecord, empty_media
from omni_rrm_jax.data.prompt_fit import PromptPieces, fit_prompt
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.models.media_inputs import media_inputs
from omni_rrm_jax.models.pretrained import from_pretrained
from omni_rrm_jax.rewards.contract import as_text, completion_list, minimum_of
from omni_rrm_jax.sampling.prompts import media_needs
from omni_rrm_jax.sharding.batch import host_rows, to_global
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, Rules, activation_sharding
from omni_rrm_jax.assembly.media import make_media_spec

log = logging.getLogger(__name__)

# Media buckets when none are given (eval/run.py's defaults): a 16k-patch image
# and a 300 s clip at most.
DEFAULT_PATCH_BUCKETS = (0, 256, 1024, 4096, 16384)
DEFAULT_AUDIO_FRAME_BUCKETS = (0, 1000, 3000, 10000, 30000)
# Chat part type -> the record's media field.
_MEDIA_FIELDS = {"image": "images", "video": "video", "audio": "audio"}


def _user_messages(prompt: Any) -> list[dict[str, Any]]:
  """A prompt as chat messages ending in the user turn: a string is one user turn."""
  if isinstance(prompt, str):
    return [{"role": "user", "content": prompt}]
  if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[-1], dict):
    return [dict(m) for m in prompt]
  return [{"role": "user", "content": as_text(prompt)}]


def _text_only(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
  out = []
  for m in messages:
    content = m["content"]
    if not isinstance(content, str):
      content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
    out.append({**m, "content": content})
  return out


def ending_in_text(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The messages with a text part ending the last turn (where the encoder reads its text)."""
  content = messages[-1]["content"]
  if isinstance(content, str) or (content and content[-1].get("type") == "text"):
    return messages
  return [*messages[:-1], {**messages[-1], "content": [*content, {"type": "text", "text": ""}]}]


def prompt_record(messages: list[dict[str, Any]]) -> PreferenceRecord | str:
  """A record holding the media parts of `messages` (in order), for the encoder
  to decode, or the `INVALID_REASONS` name of why they cannot be read."""
  media = empty_media()
  for message in messages:
    content = message.get("content")
    if isinstance(content, str):
      continue
    for part in content:
      kind = part.get("type")
      if kind == "text":
        continue
      if kind not in _MEDIA_FIELDS:
        return "unsupported media"
      path = part.get("path", part.get(kind))
      if not isinstance(path, str) or not path:
        return "bad media"
      if kind == "image":
        media["images"].append(path)
      elif media[kind]:
        return "unsupported media"  # a record (and RM training) has one video, one clip
      else:
        media[kind] = path
  modality = next((k for k, field in _MEDIA_FIELDS.items() if media[field]), "text")
  return PreferenceRecord(id="model_reward", prompt="", response_a="", response_b="",
                          label="A", modality=modality, media=media)


class ModelReward:
  """`(prompts, completions, **columns) -> list[float]` from a scalar RM folder.

  Args:
    path: the RM folder (config.json, safetensors, tokenizer files).
    batch_size: rows per forward pass over all processes (a multiple of the
      mesh's batch axes and of the process count; each process scores its
      share of every pass).
    max_length: the longest sequence scored; longer prompts are cut from the left.
    bucket: sequences are right-padded to a multiple of this (capped at
      `max_length`); with several processes, of the longest in the global batch.
    tokenizer: a tokenizer folder; default: `path`.
    mesh: device mesh for the RM's parameters and batches.
    rules: logical -> mesh axis rules.
    dtype: compute dtype.
    media_root: where the prompts' media paths resolve (multimodal RM;
      default: the working directory).
    patch_buckets: allowed padded patch counts per row (multiples of
      merge_size²); the largest caps a prompt's patches. Use the RM
      training's `media.patch_buckets`.
    audio_frame_buckets: allowed padded log-mel frame counts per row (an RM
      with an audio encoder); the largest caps a clip.
    media_overrides: `MediaConfig` fields over the folder's
      `preprocessor_config.json` (the RM training's `media.preprocess`).
  """

  def __init__(self, path: str, *, batch_size: int = 16, max_length: int = 1024,
               bucket: int = 128, tokenizer: str | None = None, mesh=None,
               rules: Rules = DEFAULT_RULES, dtype: str = "float32",
               media_root: str | None = None,
               patch_buckets: Sequence[int] = DEFAULT_PATCH_BUCKETS,
               audio_frame_buckets: Sequence[int] = DEFAULT_AUDIO_FRAME_BUCKETS,
               media_overrides: Mapping[str, Any] | None = None):
    from transformers import AutoTokenizer

    model = from_pretrained(path, mesh=mesh, rules=rules, dtype=dtype)
    if not get_architecture(model.cfg.architecture).is_classifier or model.cfg.num_labels != 1:
      raise ValueError(f"{path}: a reward model must be a *ForSequenceClassification with "
                       f"num_labels=1, got {model.cfg.architecture} with {model.cfg.num_labels}")
    tok = AutoTokenizer.from_pretrained(tokenizer or path)
    self.pad_id = model.cfg.pad_token_id if model.cfg.pad_token_id is not None else tok.pad_token_id
    if self.pad_id is None:
      raise ValueError(f"{path}: neither config.json nor the tokenizer names a pad token")
    # How a multimodal RM decodes media (None: a text RM).
    self.media = make_media_spec(model.cfg, tok, root=media_root or os.getcwd(), model_path=path,
                                 overrides=dict(media_overrides or {}),
                                 patch_buckets=patch_buckets,
                                 audio_frame_buckets=audio_frame_buckets)
    if self.media is not None and any(b % self.media.merge_unit for b in patch_buckets):
      raise ValueError(f"patch_buckets {tuple(patch_buckets)} must be multiples of "
                       f"merge_size² = {self.media.merge_unit}")
    self.encoder = ExampleEncoder(tok, max_length, RM_BATCH, media=self.media)
    if jax.process_count() > 1 and mesh is None:
      raise ValueError("a model reward on several processes needs a mesh")
    if batch_size % jax.process_count():
      raise ValueError(f"model reward batch_size={batch_size} is not divisible by "
                       f"{jax.process_count()} processes")
    self.batch_size, self.max_length, self.bucket = batch_size, max_length, bucket
    self.patch_buckets = tuple(patch_buckets)
    self.mesh, self.rules = mesh, tuple(rules)
    self.__name__ = "model_reward"
    self.unscored: collections.Counter[str] = collections.Counter()  # prompts, by reason
    self.stripped = 0  # completions with media placeholder tokens dropped
    self._graphdef, self._params = nnx.split(model)
    graphdef, mesh_, rules_ = self._graphdef, mesh, self.rules

    @jax.jit
    def score(params, batch):
      with activation_sharding(mesh_, rules_):
        rm = nnx.merge(graphdef, params)
        logits = rm(batch["ids"], attention_mask=batch["mask"], **media_inputs(rm, batch)).logits
        return logits[:, 0].astype(jnp.float32)

    self._score = score

  def _join(self, pieces: PromptPieces, response: list[int], keep_framing: bool) -> list[int]:
    """prefix + content + suffix + response within `max_length`: the response's
    end first, then the user content from its end; the framing is cut from the
    left only without `keep_framing` (it fits whole when kept: `_prepare`)."""
    framing = len(pieces.prefix) + len(pieces.suffix)
    response = response[-(self.max_length - framing if keep_framing else self.max_length):]
    fitted = fit_prompt(pieces, self.max_length, reserve=len(response))
    if fitted is not None:
      return fitted[0] + response
    # A text RM's framing does not fit beside the response: a score is still
    # owed, so the framing gives way from the left.
    return (pieces.prefix + pieces.suffix + response)[-self.max_length:]

  def encode(self, prompt: Any, completion: Any) -> list[int]:
    """The token ids a text RM scores for one (prompt, completion)."""
    messages = _text_only(_user_messages(prompt))
    pieces = self.encoder.prompt_pieces(messages)
    return self._join(pieces, self.encoder.response_ids(messages, as_text(completion)), False)

  def _prepare(self, messages: list[dict[str, Any]]):
    """`(pieces, media)` of a prompt, its media decoded and placeholders
    expanded, or the reason it cannot be scored."""
    record = prompt_record(messages)
    if isinstance(record, str):
      return record
    pieces, media, reason = self.encoder.prepare_prompt(record, messages)
    if reason != "ok":
      return reason
    if media.num_tokens and len(pieces.prefix) + len(pieces.suffix) >= self.max_length:
      return "media too long"  # not even one completion token would fit beside them
    return pieces, media

  def encode_example(self, prompt: Any, completion: Any,
                     prepared: dict[str, Any] | None = None) -> dict[str, Any] | str:
    """What a multimodal RM scores for one (prompt, completion): `{"ids"}` plus
    the media arrays of `media_batching.example_arrays`, or why the prompt's
    media cannot be used (an `INVALID_REASONS` name).

    Args:
      prompt: a string or chat messages (media parts first in a turn).
      completion: the completion (see `rewards.contract.as_text`).
      prepared: a cache of prepared prompts (one decode per distinct prompt).
    """
    messages = ending_in_text(_user_messages(prompt))
    key = json.dumps(messages, sort_keys=True, default=str)
    prepared = {} if prepared is None else prepared
    if key not in prepared:
      prepared[key] = self._prepare(messages)
    if isinstance(prepared[key], str):
      return prepared[key]
    pieces, media = prepared[key]
    response = self.encoder.response_ids(messages, as_text(completion))
    placeholders = set(self.media.placeholder_ids.values())
    kept = [t for t in response if t not in placeholders]
    self.stripped += len(kept) < len(response)
    ids = self._join(pieces, kept, keep_framing=media.num_tokens > 0)
    return {"ids": ids, **media_batching.example_arrays(ids, media, self.media)}

  def _filler(self) -> dict[str, Any]:
    """A row that keeps a batch's shape (a process may have no rows of its own)."""
    if self.media is None:
      return {"ids": [self.pad_id]}
    return {"ids": [0], **media_batching.invalid_arrays(self.media)}

  def score_rows(self, rows: Sequence[Mapping[str, Any]],
                 batch_size: int | None = None) -> np.ndarray:
    """RM scores [n] of encoded rows (`{"ids"}`, plus media arrays for a
    multimodal RM: `encode_example`), in batches of `batch_size` (default:
    the constructor's; each distinct one compiles apart).

    With several processes each passes its own rows, any number of them, and
    fills its share of every pass: they agree on the number of passes and on
    each pass's length, patch and frame buckets (small collectives).
    """
    out = []
    share = (batch_size or self.batch_size) // jax.process_count()
    num_batches = int(agree_max([-(-len(rows) // share)])[0])
    for start in range(0, num_batches * share, share):
      chunk = list(rows[start:start + share])
      n = len(chunk)
      chunk += [chunk[0] if chunk else self._filler()] * (share - n)
      with_media = "media_index" in chunk[0]
      needs = agree_max([max(len(r["ids"]) for r in chunk),
                         *(media_needs(chunk) if with_media else (0, 0))])
      t = round_up(int(needs[0]), self.bucket, self.max_length)
      ids = np.full((share, t), self.pad_id, np.int32)
      mask = np.zeros((share, t), np.int32)
      for row, r in enumerate(chunk):
        ids[row, :len(r["ids"])], mask[row, :len(r["ids"])] = r["ids"], 1
      batch = {"ids": ids, "mask": mask}
      if with_media:
        spec = self.media
        collated = media_batching.collate_media(
            chunk, length=t, patch_buckets=self.patch_buckets, merge_unit=spec.merge_unit,
            audio_frame_buckets=spec.audio_frame_buckets, min_patches=int(needs[1]),
            min_frames=int(needs[2]))
        batch.update({k: v for k, v in collated.items() if k not in HOST_ONLY})
      if self.mesh is not None:
        batch = to_global(batch, self.mesh, self.rules)
      scores = self._score(self._params, batch)
      out.append(host_rows(scores)[:n])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)

  def score_ids(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
    """Text RM scores [n] of token sequences, in batches of `batch_size`."""
    return self.score_rows([{"ids": list(s)} for s in sequences])

  def _unscored(self, reason: str) -> None:
    if not self.unscored[reason]:
      log.warning("model reward: a prompt's media cannot be used (%s); its completions score "
                  "%g and such prompts are counted (ModelReward.unscored)", reason,
                  minimum_of(self))
    self.unscored[reason] += 1

  def _score_media(self, prompts: list[Any], completions: list[Any]) -> list[float]:
    prepared: dict[str, Any] = {}  # the G completions of a prompt share one decode
    rows, unscored = [], []
    for prompt, completion in zip(prompts, completions):
      seen = len(prepared)
      row = self.encode_example(prompt, completion, prepared)
      unscored.append(isinstance(row, str))
      if isinstance(row, str):
        if len(prepared) > seen:  # counted once per distinct prompt of the call
          self._unscored(row)
        # A stand-in keeps one score per row.
        row = self._filler()
      rows.append(row)
    low = minimum_of(self)
    return [low if u else float(s) for s, u in zip(self.score_rows(rows), unscored)]

  def __call__(self, prompts: Any, completions: Any, **columns: Any) -> list[float]:
    del columns
    completions = completion_list(completions)
    prompts = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts]
    if len(prompts) != len(completions):
      raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    if self.media is not None:
      return self._score_media(prompts, completions)
    ids = [self.encode(p, c) for p, c in zip(prompts, completions)]
    return [float(x) for x in self.score_ids(ids)]
