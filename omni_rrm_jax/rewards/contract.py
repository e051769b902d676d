"""The never-raise contract shared by every reward function.

A GRPO step scores thousands of sampled completions; one odd sample (a lone
surrogate, a megabyte of garbage, `None` from a broken rollout) must not crash a
run hours in. So every reward function maps its per-sample scorer through
`score_samples`, which:

- coerces each completion to `str` (`None` -> "", bytes decoded with
  replacement, chat-format message lists -> the last message's content);
- slices the per-sample columns into one row per completion;
- turns an exception or a non-finite value from one sample into that function's
  minimum, and counts it in `error_counts()` under the function's name. The first
  error of each function is logged with its traceback, so bugs stay visible
  without flooding the log.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from typing import Any, Callable, Iterable, Mapping, Protocol

_LOG = logging.getLogger(__name__)

_LOCK = threading.Lock()
_ERROR_COUNTS: collections.Counter[str] = collections.Counter()
_LOGGED: set[str] = set()


class RewardFn(Protocol):
  """The reward function convention: one float per completion."""

  def __call__(self, prompts: Any, completions: Any, **columns: Any) -> list[float]:
    ...


def error_counts() -> dict[str, int]:
  """Returns how many samples each reward function scored as an internal error."""
  with _LOCK:
    return dict(_ERROR_COUNTS)


def reset_error_counts() -> None:
  """Clears the error counters (and lets the next error of each function log)."""
  with _LOCK:
    _ERROR_COUNTS.clear()
    _LOGGED.clear()


def record_error(name: str, message: str, *, with_traceback: bool = False) -> None:
  """Counts one internal error for reward `name`; logs only its first one."""
  with _LOCK:
    _ERROR_COUNTS[name] += 1
    first = name not in _LOGGED
    _LOGGED.add(name)
  if first:
    text = f"reward {name!r}: {message} (scored as its minimum; later errors are only counted)"
    if with_traceback:
      _LOG.exception(text)
    else:
      _LOG.warning(text)


def is_finite_number(value: Any) -> bool:
  """True for a finite int or float (bools are not numbers here)."""
  return (not isinstance(value, bool) and isinstance(value, (int, float))
          and math.isfinite(value))


def reward_range(low: float, high: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Tags a reward function with the closed range its values lie in."""

  def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn.reward_range = (float(low), float(high))
    return fn

  return decorator


def minimum_of(fn: Any) -> float:
  """The lowest value `fn` can return, or 0.0 when `fn` does not declare one."""
  low_high = getattr(fn, "reward_range", None)
  return float(low_high[0]) if low_high else 0.0


def as_text(completion: Any) -> str:
  """Coerces one completion to text without raising.

  Args:
    completion: a string; `None`; bytes; or a chat-format list of messages
      (dicts with a "content" key), as TRL-style conversational data sets give;
      the last message is scored, and a content given as parts
      (`[{"type": "text", "text": ...}, ...]`) is its text parts joined.

  Returns:
    The text to score. Lone surrogates are kept: every scorer here handles them.
  """
  if isinstance(completion, str):
    return completion
  if completion is None:
    return ""
  if isinstance(completion, (bytes, bytearray, memoryview)):
    return bytes(completion).decode("utf-8", errors="replace")
  if isinstance(completion, (list, tuple)) and completion and isinstance(completion[-1], Mapping):
    content = completion[-1].get("content", "")
    if isinstance(content, (list, tuple)):
      return "".join(part["text"] for part in content
                     if isinstance(part, Mapping) and isinstance(part.get("text"), str))
    return content if isinstance(content, str) else ""
  return str(completion)


def _describe(error: BaseException) -> str:
  try:
    message = str(error)
  except Exception:  # noqa: BLE001 -- a broken __str__ must not escape either.
    message = "<unprintable>"
  return f"{type(error).__name__}: {message[:200]}"


def completion_list(values: Any) -> list[Any]:
  """The completions as a list: None -> [], one string -> [it], iterables listed."""
  if values is None:
    return []
  if isinstance(values, (str, bytes, bytearray, Mapping)):
    return [values]
  try:
    return list(values)
  except TypeError:
    return [values]


def _rows(name: str, n: int, columns: Mapping[str, Any]) -> list[dict[str, Any]]:
  """Splits the per-sample columns into `n` row dicts; scalars are broadcast."""
  rows: list[dict[str, Any]] = [{} for _ in range(n)]
  for key, values in columns.items():
    if isinstance(values, (list, tuple)):
      if len(values) != n:
        record_error(name, f"column {key!r} has {len(values)} values for {n} completions; "
                     "ignoring it")
        values = [None] * n
    else:
      values = [values] * n
    for row, value in zip(rows, values):
      row[key] = value
  return rows


def score_samples(
    name: str,
    minimum: float,
    completions: Iterable[Any] | None,
    columns: Mapping[str, Any],
    score_one: Callable[[str, Mapping[str, Any]], float],
) -> list[float]:
  """Scores each completion, never raising.

  Args:
    name: the reward function's name, for the error counter and the log.
    minimum: the value an internal error scores.
    completions: the sampled completions (any types; see `as_text`).
    columns: per-sample lists (one value per completion) or broadcast scalars.
    score_one: `(text, row) -> float` for a single completion.

  Returns:
    One finite float per completion.
  """
  texts = completion_list(completions)
  rows = _rows(name, len(texts), columns)
  scores = []
  for completion, row in zip(texts, rows):
    try:
      value = float(score_one(as_text(completion), row))
    except Exception as e:  # noqa: BLE001 -- one bad sample must not stop a training step.
      record_error(name, _describe(e), with_traceback=True)
      value = minimum
    else:
      if not math.isfinite(value):
        record_error(name, f"non-finite value {value}")
        value = minimum
    scores.append(value)
  return scores
