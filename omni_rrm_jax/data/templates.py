"""Chat messages for the two reward heads, modality-aware.

The scalar RM scores a (prompt, response) conversation. The judge reads the
prompt and both responses and writes the strict judgment of
`omni_rrm_jax.rewards.judgment`; its instructions name the five rubric
dimensions and the exact JSON keys, and point at the media it must ground on.
"""

from __future__ import annotations

from typing import Any

from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.rewards.judgment import (DIMENSIONS, KEY_BETTER, KEY_FINAL_VERDICT, KEY_REASONING,
                                           KEY_SCORE_A, KEY_SCORE_B)

_MEDIA_NOUN = {"text": None, "image": "image", "video": "video", "audio": "audio clip"}


def media_parts(record: PreferenceRecord) -> list[dict[str, Any]]:
  """Chat content parts for the record's media, in the order the encoders read them."""
  parts = [{"type": "image", "path": p} for p in record.media.get("images") or []]
  if record.media.get("video"):
    parts.append({"type": "video", "path": record.media["video"]})
  if record.media.get("audio"):
    parts.append({"type": "audio", "path": record.media["audio"]})
  return parts


def _content(record: PreferenceRecord, text: str) -> str | list[dict[str, Any]]:
  parts = media_parts(record)
  if not parts:
    return text
  return [*parts, {"type": "text", "text": text}]


def rm_messages(record: PreferenceRecord, response: str) -> list[dict[str, Any]]:
  """The conversation a scalar reward model scores."""
  return [{"role": "user", "content": _content(record, record.prompt)},
          {"role": "assistant", "content": response}]


def judge_instructions(modality: str) -> str:
  """The judge's task statement for one modality: the rubric and the exact
  format in few words (every token of it is read again for every pair)."""
  noun = _MEDIA_NOUN.get(modality)
  grounding = f", grounded in the {noun}" if noun else ""
  dims = ", ".join(d.short.lower() for d in DIMENSIONS)
  return (
      f"Judge responses A and B{grounding}. Reply with one JSON object:"
      f' "{KEY_REASONING}" as <think>...</think> with one line for each of {dims};'
      f' "{KEY_SCORE_A}" and "{KEY_SCORE_B}" as integers 0-10; "{KEY_BETTER}" as "A", "B" or'
      f' "equal"; "{KEY_FINAL_VERDICT}" as <answer>[[better]]</answer>.')


_HEAD_B = "\n\n[Response B]\n"  # what separates response A from response B


def judge_prompt_text(record: PreferenceRecord, response_a: str, response_b: str) -> str:
  return (f"{judge_instructions(record.modality)}\n\n[Question]\n{record.prompt}\n\n"
          f"[Response A]\n{response_a}{_HEAD_B}{response_b}")


def judge_response_ends(text: str, response_b: str) -> tuple[int, int]:
  """Where responses A and B end in `judge_prompt_text(record, a, response_b)`:
  the character offsets just past each (B is the text's last part)."""
  tail = _HEAD_B + response_b
  if not text.endswith(tail):
    raise ValueError("the judge prompt does not end with response B")
  return len(text) - len(tail), len(text)


def judge_messages(record: PreferenceRecord, swap: bool = False) -> list[dict[str, Any]]:
  """The judge's prompt (a single user turn); `swap` shows B first as "A"."""
  a, b = record.response_a, record.response_b
  if swap:
    a, b = b, a
  return [{"role": "user", "content": _content(record, judge_prompt_text(record, a, b))}]
