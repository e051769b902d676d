"""Chat-format fields: a prompt or a response given as a list of messages.

Preference test sets published as chat records (UltraFeedback's test split,
RewardBench-style files re-exported by training frameworks, ...) write
`prompt`, `chosen` and `rejected` as lists of `{"role", "content"}` messages
instead of strings. A record holds one prompt string and one response string
per side, so:

  - a response list's last message must be the assistant's; its content is
    the response, and the messages before it (when any) are the prompt;
  - a prompt of several turns becomes one transcript, "User: ...",
    "Assistant: ...", one turn per paragraph; a single user turn stays as its
    text;
  - content may be a string or a list of `{"type": "text", "text": ...}`
    parts; other parts (images by URL, ...) are a bad row, since dropping them
    would change the question.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from omni_rrm_jax.data.records import BadRecord


def message_text(message: Any, where: str) -> tuple[str, str]:
  """(role, text) of one message; `where` names the field for errors."""
  if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
    raise BadRecord(f"{where} messages must be objects with role and content")
  role, content = message["role"], message["content"]
  if not isinstance(role, str):
    raise BadRecord(f"{where} message role must be a string", f"got {type(role).__name__}")
  if isinstance(content, str):
    return role, content
  if isinstance(content, list) and all(
      isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str)
      for p in content):
    return role, "".join(p["text"] for p in content)
  raise BadRecord(f"{where} message content must be text", f"got {str(content)[:80]!r}")


def transcript(messages: Sequence[Any], where: str) -> str:
  """One prompt string from a list of messages (see the module docstring)."""
  if not messages:
    raise BadRecord(f"{where} has no messages")
  turns = [message_text(m, where) for m in messages]
  if len(turns) == 1 and turns[0][0] == "user":
    return turns[0][1]
  return "\n\n".join(f"{role.capitalize()}: {text}" for role, text in turns)


def split_response(value: Any, where: str) -> tuple[str | None, str]:
  """(prompt from the earlier turns or None, response) of a response field.

  A string is the response itself; a message list ends with the assistant's
  response, preceded by the conversation so far.
  """
  if isinstance(value, str):
    return None, value
  if not isinstance(value, list) or not value:
    raise BadRecord(f"{where} must be a string or a list of messages",
                    f"got {type(value).__name__}")
  role, text = message_text(value[-1], where)
  if role != "assistant":
    raise BadRecord(f"{where} must end with the assistant's message", f"got role {role!r}")
  return (transcript(value[:-1], where) if len(value) > 1 else None), text


def prompt_text(value: Any, where: str) -> str:
  """A prompt field as a string: itself, or the transcript of its messages."""
  if isinstance(value, str):
    return value
  if isinstance(value, list):
    return transcript(value, where)
  raise BadRecord(f"{where} must be a string or a list of messages",
                  f"got {type(value).__name__}")


def chat_pair(row: Mapping[str, Any]) -> tuple[str, str, str]:
  """(prompt, chosen, rejected) of a row whose fields may be message lists.

  The conversation before the last turn of `chosen` (when it has one) is the
  prompt, and must equal `rejected`'s; otherwise the `prompt` field is.
  """
  for key in ("chosen", "rejected"):
    if row.get(key) is None:
      raise BadRecord(f"missing field {key!r}")
  history_c, chosen = split_response(row["chosen"], "chosen")
  history_r, rejected = split_response(row["rejected"], "rejected")
  if history_c != history_r:
    raise BadRecord("chosen and rejected conversations differ before the last turn")
  if history_c is not None:
    return history_c, chosen, rejected
  if row.get("prompt") is None:
    raise BadRecord("missing field 'prompt'")
  return prompt_text(row["prompt"], "prompt"), chosen, rejected
