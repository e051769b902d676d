"""The question behind one synthetic omni pair, and the rationale written for it.

Every omni task (a text fact, shapes in an image, motion in a video, tones in
an audio clip) draws a `Question`: a prompt, a correct and a plausible wrong
answer, the values that tell them apart, the fact that decides between them,
and a writer for its media file. Both answers fill the same template with a
different value, so only the value (and, for media, only the media) decides
which is right.

Drawing a question consumes all of its randomness; `write` is a pure function
of what was drawn, so a generator may render media only for the pairs its
teachers keep and still produce the same bytes for the same seed.

`render_rationale` is the judge's SFT target: one fixed template over the five
rubric dimensions, short and regular (one-word headings, ~95 tokens of the
demo's tokenizer where the titled lines took ~140), naming A and B on every line. The
response the scores prefer is the one called correct, and the fact is stated
with its value, so the text always agrees with the scores and the label.
The accuracy line states the fact, then judges each response on its own
("the shape is red; A says blue: wrong; B says red: right; so B is correct"):
each verdict compares a value just copied with the media (or the fact), and the
letter follows the verdict next to it. Stating both claims first and then
matching the fact to a letter ("A says blue and B says red; the shape is red,
so B is correct") left a tiny judge at chance after 600 SFT steps, copying the
claims and the fact right but always writing the same letter (README: "What we
tried").
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, Mapping, Sequence

from omni_rrm_jax.rewards.judgment import (BETTER_A, BETTER_B, preference_from_scores,
                                           render_judgment)

# What the rationale says each modality's answer is grounded in.
NOUNS = {"text": "question", "image": "image", "video": "video", "audio": "audio"}


@dataclasses.dataclass(frozen=True)
class Question:
  """One drawn task instance, before A/B order and scores.

  Attributes:
    modality: "text", "image", "video" or "audio".
    subset: the task name, e.g. "image-count"; records carry it as `subset`.
    prompt: the user turn.
    good: the correct response.
    bad: the plausible wrong response.
    good_value: the value `good` states, e.g. "three".
    bad_value: the value `bad` states.
    fact: the deciding fact with a "{v}" slot for a value, e.g.
      "the count is {v}".
    write: writes the media file to a path; None for text.
    suffix: the media file's extension, e.g. ".png"; "" for text.
  """

  modality: str
  subset: str
  prompt: str
  good: str
  bad: str
  good_value: str
  bad_value: str
  fact: str
  write: Callable[[str], None] | None = None
  suffix: str = ""


# A task draws one question from its own random stream.
Task = Callable[[random.Random], Question]


def capitalise(text: str) -> str:
  """`text` with its first character upper-cased (the rest untouched)."""
  return text[:1].upper() + text[1:]


def count_pair(rng: random.Random, largest: int) -> tuple[int, int]:
  """(right, wrong) counts in 1..`largest` that differ by one, drawn so that the
  words alone do not tell them apart.

  The unordered pair {k, k + 1} is drawn first (k uniform in 1..largest - 1),
  then which of the two is right (a fair coin). Drawing the right count first
  and then a neighbour would leak it: a pair {1, 2} would then be right on "1"
  two times in three, since 1 has only one neighbour.
  """
  low = rng.randint(1, largest - 1)
  return (low, low + 1) if rng.random() < 0.5 else (low + 1, low)


def answer_pair(rng: random.Random, templates: Sequence[str], good_value: str,
                bad_value: str, **fields: object) -> tuple[str, str]:
  """(good, bad) responses: one template, filled once with each value.

  Templates use `{v}` for the value, `{V}` for it capitalised, and any other
  `fields` (e.g. `{x}` for the object asked about).
  """
  template = rng.choice(templates)
  fill = lambda v: template.format(v=v, V=capitalise(v), **fields)  # noqa: E731
  return fill(good_value), fill(bad_value)


def render_rationale(question: Question, values: Mapping[str, str],
                     scores: Mapping[str, int]) -> str:
  """The strict-format judgment for a pair, consistent with `scores`.

  Args:
    question: supplies the modality (what is looked at) and the fact template.
    values: {"A": value response A states, "B": value response B states}.
    scores: {"A": 0-10, "B": 0-10}; must not tie.

  Returns:
    `rewards.judgment.render_judgment` output whose `better` is the response
    the scores prefer and whose reasoning calls that response's value right.

  Raises:
    ValueError: tied scores (the template has no wording for a tie).
  """
  better = preference_from_scores(scores["A"], scores["B"])
  if better not in (BETTER_A, BETTER_B):
    raise ValueError(f"a synthetic rationale needs a strict preference, got scores {dict(scores)}")
  worse = BETTER_B if better == BETTER_A else BETTER_A
  noun = NOUNS[question.modality]
  fact = question.fact.replace("{v}", values[better])
  verdict = {better: "right", worse: "wrong"}
  reasoning = {
      "fluency_coherence": "A and B are fluent.",
      "relevance": f"A and B fit the {noun}.",
      "accuracy_completeness": (f"{fact}; A says {values['A']}: {verdict['A']}; "
                                f"B says {values['B']}: {verdict['B']}; so {better} is correct."),
      "reasoning_quality": f"{better} fits the {noun}; {worse} does not.",
      "safety_ethics": "A and B are safe.",
  }
  return render_judgment(scores["A"], scores["B"], reasoning, short_headings=True)
