"""Records -> token arrays for the scalar RM and the judge, with safe truncation.

The prompt is cut from the left (its oldest content first), never the response:
a reward model must see how a response ends. The chat template's own framing
(role headers, the generation prompt) is kept whole. An example whose response
alone does not fit is marked invalid (it still fills its batch slot, with
`valid=False`, so that shapes stay fixed and the loop counts it exactly).

With a `MediaSpec` the encoder also decodes the record's media (in the data
worker that runs it) and expands each placeholder the template wrote to one
token per merged patch, or per audio-encoder output of a clip. Media tokens
sit in the template's framing before the user text, so truncation never cuts
into them; when they do not fit beside the response, or their patches or
audio frames exceed the largest bucket, the example is invalid ("media too
long"). A file that is missing, corrupt or outside the media root makes it
invalid as "bad media" (or stops the pipeline, naming file and reason, with
`strict`); see `media_batching.py` for the arrays it adds.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from omni_rrm_jax.core.batch_contract import PROBE_KEYS, BatchContract
from omni_rrm_jax.core.weight_spec import parse_weights
from omni_rrm_jax.data import media_batching
from omni_rrm_jax.data.media_batching import DecodedMedia, MediaSpec
from omni_rrm_jax.data.prompt_fit import PromptPieces, fit_prompt
from omni_rrm_jax.data.records import MODALITIES, BadRecord, PreferenceRecord
from omni_rrm_jax.data.templates import judge_messages, judge_response_ends, rm_messages
from omni_rrm_jax.rewards.judgment import parse_judgment

log = logging.getLogger(__name__)

_SENTINEL = "\u2063ORJ-PROMPT-CONTENT\u2063"
_MAX_MEDIA_WARNINGS = 10  # per process: enough to find the files, not a flood

# Why an example was marked invalid; the loop counts these. Append only: the
# index travels in batches and checkpoints' logs.
# What an SFT example's target is (`ExampleEncoder`'s `sft_target`).
SFT_TARGETS = ("judgment", "chosen")
INVALID_REASONS = ("ok", "tie label", "response too long", "no valid judgment rationale",
                   "bad media", "media too long", "unsupported media", "media token mismatch",
                   "prompt too long", "target too long")


def _no_probes() -> dict[str, list[int]]:
  """An example's response probes, all of weight 0 (`core.batch_contract.PROBE_KEYS`)."""
  return {key: [0, 0] for key in PROBE_KEYS}


class ExampleEncoder:
  """Turns `PreferenceRecord`s into token arrays with a chat template.

  Args:
    tokenizer: a transformers tokenizer with a chat template.
    max_length: the longest sequence a model sees.
    kind: the batch contract of the examples (`core.batch_contract`; a
      task's `TaskKind.batch`): a pairwise one (`RM_BATCH`) encodes chosen /
      rejected conversations, `SFT_BATCH` the judge prompt with its judgment
      as target.
    margin_scale: the RM margin is `margin_scale * (score_chosen -
      score_rejected)` when a record has teacher scores, else 0.
    media: decode media and expand placeholders for a multimodal model;
      None keeps placeholders as single tokens (text models).
    score_ties: encode a tie-labelled record (response A as "chosen") instead
      of marking it invalid; evaluation scores ties, training cannot use them.
    sft_target: what an `SFT_BATCH` example learns to write: "judgment" (the
      judge prompt with the record's rationale as target) or "chosen" (the
      record's prompt and media, the preferred response as target: plain
      supervised fine-tuning on the better answers).
    max_target_tokens: an `SFT_BATCH` example whose target is longer is
      invalid ("target too long"): the loss gives the vocabulary head at most
      this many target positions a row (`model.target_logits`). 0: no limit.
    target_weights: {word: integer loss weight} of target words.
    response_probe: `(good word, bad word, weight)` or None: each judgment
      example also carries a probe per response (`core.batch_contract.PROBE_KEYS`):
      at the last token of response A and of response B in the judge prompt,
      the vocabulary head is trained to predict the good word (e.g. "right")
      for the record's preferred response and the bad word for the other,
      each with `weight` (`data.response_probe`). The judge never writes at
      those positions (they are prompt), so what it generates is unchanged;
      what the probe adds is a per-response correctness signal where each
      response ends, which the judgment's verdicts can then read.
  """

  def __init__(self, tokenizer, max_length: int, kind: BatchContract, margin_scale: float = 0.0,
               media: MediaSpec | None = None, score_ties: bool = False,
               sft_target: str = "judgment", max_target_tokens: int = 0,
               target_weights: Mapping[str, int] | None = None,
               response_probe: tuple[str, str, int] | None = None):
    if not isinstance(kind, BatchContract) or not kind.token_fields:
      raise ValueError(f"an example encoder needs a batch contract with token fields "
                       f"(core.batch_contract.RM_BATCH or SFT_BATCH), got {kind!r}")
    self.tokenizer = tokenizer
    self.max_length = max_length
    self.kind = kind
    self.margin_scale = margin_scale
    self.media = media
    self.score_ties = score_ties
    if sft_target not in SFT_TARGETS:
      raise ValueError(f"sft_target must be one of {', '.join(SFT_TARGETS)}, got {sft_target!r}")
    self.sft_target = sft_target
    self.max_target_tokens = max_target_tokens
    self.target_weights = {w.lower(): int(n) for w, n in (target_weights or {}).items()}
    self._token_weights: dict[int, int] = {}
    self.response_probe = self._probe_tokens(response_probe) if response_probe else None
    self._media_warnings = 0
    if media is not None:
      self._check_placeholders()

  def _check_placeholders(self) -> None:
    """Fails at start-up, not per example, if the template's placeholders are not the model's."""
    for kind, token in self.media.placeholder_ids.items():
      probe = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": "x"}]}]
      found = media_batching.count_placeholders(
          self._ids(self._render(probe, generation_prompt=True)), self.media)[token]
      if found != 1:
        raise ValueError(
            f"the chat template renders a {kind} part as {found} tokens of id {token} (the "
            f"model's {kind} placeholder), expected 1: tokenizer and model disagree")

  def _probe_tokens(self, probe: tuple[str, str, int]) -> tuple[int, int, int]:
    """(good token, bad token, weight): each word must be one token after a space,
    as a judgment writes it ("A says red: right")."""
    if self.kind.pairwise or self.sft_target != "judgment":
      raise ValueError("data.response_probe needs judge SFT (data.target=judgment)")
    good, bad, weight = probe
    ids = []
    for word in (good, bad):
      word_ids = self._ids(f" {word}")
      if len(word_ids) != 1:
        raise ValueError(f"bad setting: data.response_probe word {word!r} is {len(word_ids)} "
                         f"tokens of this tokenizer after a space; a probe word must be one")
      ids.append(word_ids[0])
    return ids[0], ids[1], int(weight)

  def _ids(self, text: str) -> list[int]:
    return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

  def _render(self, messages, generation_prompt: bool) -> str:
    return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                              add_generation_prompt=generation_prompt)

  def prompt_pieces(self, messages: list[dict[str, Any]]) -> PromptPieces:
    """Tokenizes the prompt turn(s) as (framing before, user content, framing after)."""
    last = messages[-1]
    if isinstance(last["content"], str):
      text, marked = last["content"], {**last, "content": _SENTINEL}
    else:
      text = last["content"][-1]["text"]
      marked = {**last, "content": [*last["content"][:-1], {"type": "text", "text": _SENTINEL}]}
    rendered = self._render([*messages[:-1], marked], generation_prompt=True)
    prefix, found, suffix = rendered.partition(_SENTINEL)
    if not found:
      raise ValueError("the chat template dropped the user content")
    return PromptPieces(self._ids(prefix), self._ids(text), self._ids(suffix))

  def response_ids(self, prompt_messages, response: str) -> list[int]:
    """The assistant turn as the template writes it (content plus end-of-turn)."""
    prompt = self._render(prompt_messages, generation_prompt=True)
    full = self._render([*prompt_messages, {"role": "assistant", "content": response}],
                        generation_prompt=False)
    if not full.startswith(prompt):
      raise ValueError("the chat template renders the prompt differently inside a conversation")
    return self._ids(full[len(prompt):])

  def judge_prompt_ids(self, record: PreferenceRecord, swap: bool = False,
                       max_prompt_length: int | None = None) -> list[int] | None:
    """The judge prompt's tokens (generation prompt included), fitted to
    `max_prompt_length` (default: `max_length`) by `prompt_fit.fit_prompt`;
    None when its framing alone is longer. Text path only: media stay one
    placeholder token each, whatever `media` says."""
    limit = self.max_length if max_prompt_length is None else max_prompt_length
    fitted = fit_prompt(self.prompt_pieces(judge_messages(record, swap=swap)), limit)
    return None if fitted is None else fitted[0]

  def encode(self, record: PreferenceRecord) -> dict[str, Any]:
    return self._encode_pair(record) if self.kind.pairwise else self._encode_target(record)

  def _meta(self, record: PreferenceRecord, reason: str, truncated: bool) -> dict[str, Any]:
    return {"valid": reason == "ok", "invalid_reason": INVALID_REASONS.index(reason),
            "truncated": truncated, "modality": MODALITIES.index(record.modality)}

  def _invalid(self, record: PreferenceRecord, empty: dict[str, Any], reason: str):
    media = media_batching.invalid_arrays(self.media) if self.media else {}
    return {**empty, **media, **self._meta(record, reason, False)}

  def _decode_media(self, record: PreferenceRecord) -> DecodedMedia | str:
    """The record's decoded media, or why the example cannot use it."""
    spec = self.media
    if spec.unsupported(record):
      return "unsupported media"
    try:
      media = media_batching.decode_media(record, spec)
    except BadRecord as e:
      if spec.strict:
        raise ValueError(f"record {record.id}: {e} (strict mode: bad media is fatal)") from e
      if self._media_warnings < _MAX_MEDIA_WARNINGS:
        self._media_warnings += 1
        log.warning("record %s: bad media, example skipped: %s", record.id, e)
      return "bad media"
    if len(media.patches) > spec.max_patches or media.audio_frames > spec.max_audio_frames:
      return "media too long"
    return media

  def _with_media(self, pieces: PromptPieces, media: DecodedMedia,
                  responses: list[list[int]]) -> PromptPieces | str:
    """Pieces with each placeholder expanded, or why that is impossible.

    Placeholders must appear once per item in the template's framing and never
    in the user text or responses (a literal "<|IMAGE|>" typed in a prompt would
    otherwise steal an image's features).
    """
    count = lambda ids: media_batching.count_placeholders(ids, self.media)  # noqa: E731
    framing = count(pieces.prefix + pieces.suffix)
    stray = count(pieces.content + [t for r in responses for t in r])
    if any(stray.values()) or any(framing[t] != len(media.tokens.get(t, []))
                                  for t in framing):
      return "media token mismatch"
    remaining = {t: list(n) for t, n in media.tokens.items()}
    prefix = media_batching.expand_placeholders(pieces.prefix, remaining)
    suffix = media_batching.expand_placeholders(pieces.suffix, remaining)
    return PromptPieces(prefix, pieces.content, suffix)

  def _prepare(self, record: PreferenceRecord, pieces: PromptPieces,
               responses: list[list[int]]) -> tuple[PromptPieces, DecodedMedia | None, str]:
    """(pieces, media, "ok") ready to fit, or a reason the example is invalid."""
    if self.media is None:
      return pieces, None, "ok"
    media = self._decode_media(record) if record.media_paths() else media_batching.no_media(
        self.media)
    if isinstance(media, str):
      return pieces, None, media
    expanded = self._with_media(pieces, media, responses)
    if isinstance(expanded, str):
      return pieces, None, expanded
    return expanded, media, "ok"

  def prepare_prompt(self, record: PreferenceRecord, messages: list[dict[str, Any]]
                     ) -> tuple[PromptPieces, DecodedMedia | None, str]:
    """A generation prompt (no response): `(pieces, media, "ok")` with the
    record's media decoded and its placeholders expanded, or a reason it is
    unusable. The same checks as training examples, so a record is usable (or
    not, for the same reason) in every task."""
    return self._prepare(record, self.prompt_pieces(messages), [])

  def _fit_or_reason(self, pieces: PromptPieces, media: DecodedMedia | None,
                     longest_response: int) -> tuple[list[int], bool] | str:
    fitted = fit_prompt(pieces, self.max_length, reserve=longest_response)
    if fitted is not None:
      return fitted
    # Had each item stayed one placeholder token (as a text model sees it), would
    # the example fit? Then its media is what does not.
    expansion = media.num_tokens - sum(len(v) for v in media.tokens.values()) if media else 0
    budget = self.max_length - longest_response - len(pieces.prefix) - len(pieces.suffix)
    return "media too long" if expansion and budget + expansion >= 0 else "response too long"

  def _encode_pair(self, record: PreferenceRecord) -> dict[str, Any]:
    empty = {"chosen": [0], "rejected": [0], "margin": 0.0}
    if record.label == "equal" and not self.score_ties:
      return self._invalid(record, empty, "tie label")
    chosen, rejected = ((record.response_a, record.response_b) if record.label != "B"
                        else (record.response_b, record.response_a))
    prompt_messages = rm_messages(record, "")[:-1]
    c_ids = self.response_ids(prompt_messages, chosen)
    r_ids = self.response_ids(prompt_messages, rejected)
    pieces, media, reason = self._prepare(record, self.prompt_pieces(prompt_messages),
                                          [c_ids, r_ids])
    fitted = self._fit_or_reason(pieces, media, max(len(c_ids), len(r_ids))) if (
        reason == "ok") else reason
    if isinstance(fitted, str):
      return self._invalid(record, empty, fitted)
    prompt_ids, truncated = fitted
    margin = 0.0
    if self.margin_scale and record.scores:
      side_c, side_r = ("A", "B") if record.label == "A" else ("B", "A")
      margin = self.margin_scale * (record.scores[side_c] - record.scores[side_r])
    out = {"chosen": prompt_ids + c_ids, "rejected": prompt_ids + r_ids, "margin": margin,
           **self._meta(record, "ok", truncated)}
    if media is not None:
      # Both rows share the prompt, hence its media and positions: the shared
      # arrays follow the longer row (the shorter one's extra slots are padding).
      longer = out["chosen"] if len(c_ids) >= len(r_ids) else out["rejected"]
      out.update(media_batching.example_arrays(longer, media, self.media))
    return out

  def _target_mask(self, t_ids: list[int]) -> list[int]:
    """The loss weight of each target token: `target_weights` of its word, else 1."""
    if not self.target_weights:
      return [1] * len(t_ids)
    for tid in t_ids:
      if tid not in self._token_weights:
        word = self.tokenizer.decode([tid]).strip().lower()
        self._token_weights[tid] = self.target_weights.get(word, 1)
    return [self._token_weights[tid] for tid in t_ids]

  def _probes(self, record: PreferenceRecord, messages, pieces: PromptPieces,
              prompt_ids: list[int]) -> dict[str, list[int]]:
    """The example's response probes ([2] each: A, B); see `response_probe`.
    A response whose end was cut from the prompt, or a tie, gets weight 0."""
    good, bad, weight = self.response_probe
    out = _no_probes()
    if record.label not in ("A", "B"):
      return out
    last = messages[-1]["content"]
    text = last if isinstance(last, str) else last[-1]["text"]
    encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(encoded["input_ids"]) != pieces.content:
      raise ValueError("data.response_probe: the tokenizer splits the judge prompt differently "
                       "with offsets; it needs a fast tokenizer")
    starts = [start for start, _ in encoded["offset_mapping"]]
    # Content token i sits at content_start + i (content is cut from the left).
    content_start = len(prompt_ids) - len(pieces.suffix) - len(pieces.content)
    for side, end in enumerate(judge_response_ends(text, record.response_b)):
      # The response's last token: the last one starting before its end.
      position = content_start + max(i for i, start in enumerate(starts) if start < end)
      if position >= len(pieces.prefix):
        out["probe_positions"][side] = position
        out["probe_targets"][side] = good if "AB"[side] == record.label else bad
        out["probe_weights"][side] = weight
    return out

  def _encode_target(self, record: PreferenceRecord) -> dict[str, Any]:
    empty = {"input_ids": [0], "loss_mask": [0]}
    if self.response_probe:
      empty.update(_no_probes())
    if self.sft_target == "chosen":
      if record.label not in ("A", "B"):
        return self._invalid(record, empty, "tie label")
      target = record.response_a if record.label == "A" else record.response_b
      messages = rm_messages(record, "")[:-1]
    else:
      target = record.rationale or ""
      if not parse_judgment(target).ok:
        return self._invalid(record, empty, "no valid judgment rationale")
      messages = judge_messages(record)
    t_ids = self.response_ids(messages, target)
    if self.max_target_tokens and len(t_ids) > self.max_target_tokens:
      return self._invalid(record, empty, "target too long")
    pieces, media, reason = self._prepare(record, self.prompt_pieces(messages), [t_ids])
    fitted = self._fit_or_reason(pieces, media, len(t_ids)) if reason == "ok" else reason
    if isinstance(fitted, str):
      return self._invalid(record, empty, fitted)
    prompt_ids, truncated = fitted
    out = {"input_ids": prompt_ids + t_ids,
           "loss_mask": [0] * len(prompt_ids) + self._target_mask(t_ids),
           **self._meta(record, "ok", truncated)}
    if self.response_probe:
      out.update(self._probes(record, messages, pieces, prompt_ids))
    if media is not None:
      out.update(media_batching.example_arrays(out["input_ids"], media, self.media))
    return out


def parse_target_weights(spec: str, setting: str = "data.target_weights") -> dict[str, int]:
  """"word:weight,..." -> {word in lower case: integer weight >= 1}; a bad entry is
  one line naming `setting` (`core/weight_spec.py:parse_weights`)."""
  weights = {}
  for word, weight in parse_weights(spec, setting, example="right:4").items():
    if weight < 1 or weight != int(weight):
      raise ValueError(f"bad setting: {setting} has {word}:{weight:g}; a word's weight must "
                       "be an integer >= 1, e.g. right:4")
    if word.lower() in weights:
      raise ValueError(f"bad setting: {setting} lists {word.lower()!r} twice")
    weights[word.lower()] = int(weight)
  return weights


def as_arrays(example: dict[str, Any]) -> dict[str, Any]:
  """Lists -> int32 numpy arrays (what crosses worker-process boundaries)."""
  return {k: np.asarray(v, np.int32) if isinstance(v, list) else v for k, v in example.items()}
