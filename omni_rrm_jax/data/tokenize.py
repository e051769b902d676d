"""Records -> token arrays for the scalar RM and the judge, with safe truncation.

The prompt is cut from the left (its oldest content first), never the response:
a reward model must see how a response ends. The chat template's own framing
(role headers, the generation prompt) is kept whole. An example whose response
alone does not fit is marked invalid (it still fills its batch slot, with
`valid=False`, so that shapes stay fixed and the loop counts it exactly).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from omni_rrm_jax.data.records import MODALITIES, PreferenceRecord
from omni_rrm_jax.data.templates import judge_messages, rm_messages
from omni_rrm_jax.rewards.judgment import parse_judgment

_SENTINEL = "\u2063ORJ-PROMPT-CONTENT\u2063"

# Why an example was marked invalid; the loop counts these.
INVALID_REASONS = ("ok", "tie label", "response too long", "no valid judgment rationale")


@dataclasses.dataclass(frozen=True)
class PromptPieces:
  """A rendered prompt split around its user content, each part tokenized."""
  prefix: list[int]
  content: list[int]
  suffix: list[int]


class ExampleEncoder:
  """Turns `PreferenceRecord`s into token arrays with a chat template.

  Args:
    tokenizer: a transformers tokenizer with a chat template.
    max_length: the longest sequence a model sees.
    kind: "rm" (chosen / rejected conversations) or "sft" (judge prompt and
      its judgment as target).
    margin_scale: the RM margin is `margin_scale * (score_chosen -
      score_rejected)` when a record has teacher scores, else 0.
  """

  def __init__(self, tokenizer, max_length: int, kind: str, margin_scale: float = 0.0):
    if kind not in ("rm", "sft"):
      raise ValueError(f"unknown example kind {kind!r}; expected 'rm' or 'sft'")
    self.tokenizer = tokenizer
    self.max_length = max_length
    self.kind = kind
    self.margin_scale = margin_scale

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

  def _fit(self, pieces: PromptPieces, longest_response: int) -> tuple[list[int], bool] | None:
    budget = self.max_length - longest_response - len(pieces.prefix) - len(pieces.suffix)
    if budget < 0:
      return None
    content = pieces.content
    truncated = len(content) > budget
    if truncated:
      content = content[len(content) - budget:] if budget else []
    return pieces.prefix + content + pieces.suffix, truncated

  def judge_prompt_ids(self, record: PreferenceRecord, swap: bool = False,
                       max_prompt_length: int | None = None) -> list[int]:
    """The judge prompt's tokens (generation prompt included), content cut from
    the left to fit `max_prompt_length` (default: `max_length`)."""
    limit = self.max_length if max_prompt_length is None else max_prompt_length
    pieces = self.prompt_pieces(judge_messages(record, swap=swap))
    budget = max(limit - len(pieces.prefix) - len(pieces.suffix), 0)
    content = pieces.content[max(len(pieces.content) - budget, 0):] if budget else []
    return pieces.prefix + content + pieces.suffix

  def encode(self, record: PreferenceRecord) -> dict[str, Any]:
    return self._encode_rm(record) if self.kind == "rm" else self._encode_sft(record)

  def _meta(self, record: PreferenceRecord, reason: str, truncated: bool) -> dict[str, Any]:
    return {"valid": reason == "ok", "invalid_reason": INVALID_REASONS.index(reason),
            "truncated": truncated, "modality": MODALITIES.index(record.modality)}

  def _encode_rm(self, record: PreferenceRecord) -> dict[str, Any]:
    empty = {"chosen": [0], "rejected": [0], "margin": 0.0}
    if record.label == "equal":
      return {**empty, **self._meta(record, "tie label", False)}
    chosen, rejected = ((record.response_a, record.response_b) if record.label == "A"
                        else (record.response_b, record.response_a))
    prompt_messages = rm_messages(record, "")[:-1]
    pieces = self.prompt_pieces(prompt_messages)
    c_ids = self.response_ids(prompt_messages, chosen)
    r_ids = self.response_ids(prompt_messages, rejected)
    fitted = self._fit(pieces, max(len(c_ids), len(r_ids)))
    if fitted is None:
      return {**empty, **self._meta(record, "response too long", False)}
    prompt_ids, truncated = fitted
    margin = 0.0
    if self.margin_scale and record.scores:
      side_c, side_r = ("A", "B") if record.label == "A" else ("B", "A")
      margin = self.margin_scale * (record.scores[side_c] - record.scores[side_r])
    return {"chosen": prompt_ids + c_ids, "rejected": prompt_ids + r_ids, "margin": margin,
            **self._meta(record, "ok", truncated)}

  def _encode_sft(self, record: PreferenceRecord) -> dict[str, Any]:
    empty = {"input_ids": [0], "loss_mask": [0]}
    target = record.rationale or ""
    if not parse_judgment(target).ok:
      return {**empty, **self._meta(record, "no valid judgment rationale", False)}
    messages = judge_messages(record)
    pieces = self.prompt_pieces(messages)
    t_ids = self.response_ids(messages, target)
    fitted = self._fit(pieces, len(t_ids))
    if fitted is None:
      return {**empty, **self._meta(record, "response too long", False)}
    prompt_ids, truncated = fitted
    return {"input_ids": prompt_ids + t_ids, "loss_mask": [0] * len(prompt_ids) + [1] * len(t_ids),
            **self._meta(record, "ok", truncated)}


def as_arrays(example: dict[str, Any]) -> dict[str, Any]:
  """Lists -> int32 numpy arrays (what crosses worker-process boundaries)."""
  return {k: np.asarray(v, np.int32) if isinstance(v, list) else v for k, v in example.items()}
