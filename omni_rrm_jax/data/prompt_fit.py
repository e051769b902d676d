"""Fitting a prompt to a length: the one rule every task uses.

  ids, truncated = fit_prompt(pieces, max_length, reserve=len(response_ids))

A prompt is rendered as three token runs (`PromptPieces`): the template's
framing before the user content (role headers, system prompt, media tokens),
the user content, and the framing after it (the generation prompt). Only the
user content gives way, from the left, so the model still reads the end of
the question and every media token; the framing is never cut. When the
framing alone (plus what must follow it: `reserve`) does not fit, there is no
prompt: the caller marks the example or prompt invalid and counts it, rather
than sending an over-long prompt on (where it would fail later, mid-run).
Training examples, judge and GRPO prompts, and the model reward's
conversations all fit this way.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PromptPieces:
  """A rendered prompt split around its user content, each part tokenized."""
  prefix: list[int]
  content: list[int]
  suffix: list[int]


def fit_prompt(pieces: PromptPieces, max_length: int,
               reserve: int = 0) -> tuple[list[int], bool] | None:
  """`prefix + content + suffix` in `max_length - reserve` tokens, the content cut from the left.

  Args:
    pieces: the prompt's framing and user content.
    max_length: the longest sequence allowed.
    reserve: tokens kept free after the prompt (a response that must fit whole).

  Returns:
    `(ids, truncated)`, `truncated` telling whether content was cut; None when
    the framing and `reserve` alone exceed `max_length`.
  """
  budget = max_length - reserve - len(pieces.prefix) - len(pieces.suffix)
  if budget < 0:
    return None
  content = pieces.content
  truncated = len(content) > budget
  if truncated:
    content = content[len(content) - budget:] if budget else []
  return [*pieces.prefix, *content, *pieces.suffix], truncated
