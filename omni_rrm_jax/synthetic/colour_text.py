"""Seeded synthetic preference pairs with teacher scores and rubric rationales.

Text facts that a tiny model can learn in minutes on a CPU: the colour of an
everyday object, and small sums. Each pair has a correct ("strong") and a
plausible wrong ("weak") answer in random A/B order, teacher-style 0-10 scores
and a rationale in the strict judgment format, so the same records train the
scalar RM (label, scores) and the judge (rationale).

The omni generator (four modalities, two reconciled teachers) is
`synthetic.omni.generate_omni_pairs`; its text tasks are in `synthetic/text.py`.
"""

from __future__ import annotations

import random
from typing import Iterable

from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.synthetic.text import COLOUR_PROMPTS, COLOURS
from omni_rrm_jax.rewards.judgment import render_judgment

_COLOUR_NAMES = sorted(set(COLOURS.values()))
_COLOUR_PROMPTS = COLOUR_PROMPTS
_COLOUR_ANSWERS = ("The {x} is {c}.", "It is {c}.", "{C}.")
_SUM_PROMPTS = ("What is {a} plus {b}?", "Compute {a} + {b}.", "Add {a} and {b}.")
_SUM_ANSWERS = ("{a} plus {b} is {s}.", "The answer is {s}.", "{s}.")


def _colour_pair(rng: random.Random) -> tuple[str, str, str, str]:
  obj = rng.choice(sorted(COLOURS))
  right = COLOURS[obj]
  wrong = rng.choice([c for c in _COLOUR_NAMES if c != right])
  template = rng.choice(_COLOUR_ANSWERS)
  fill = lambda c: template.format(x=obj, c=c, C=c.capitalize())
  return rng.choice(_COLOUR_PROMPTS).format(x=obj), fill(right), fill(wrong), obj


def _sum_pair(rng: random.Random) -> tuple[str, str, str, str]:
  a, b = rng.randint(0, 9), rng.randint(0, 9)
  wrong = a + b + rng.choice([-2, -1, 1, 2, 3])
  wrong = wrong if wrong >= 0 else a + b + 1
  template = rng.choice(_SUM_ANSWERS)
  fill = lambda s: template.format(a=a, b=b, s=s)
  return rng.choice(_SUM_PROMPTS).format(a=a, b=b), fill(a + b), fill(wrong), f"{a} + {b}"


KINDS = {"colour": _colour_pair, "sum": _sum_pair}


def _rationale(better: str, worse: str, subject: str, score_better: int, score_worse: int,
               good: str, bad: str) -> str:
  reasoning = {
      "fluency_coherence": f"Both {better} and {worse} are short, fluent sentences.",
      "relevance": f"{better} and {worse} both answer the question about the {subject}.",
      "accuracy_completeness": (f"{better} says \"{good}\", which is correct; {worse} says "
                                f"\"{bad}\", which is wrong."),
      "reasoning_quality": f"{better} reaches the right answer, {worse} does not.",
      "safety_ethics": f"Neither {better} nor {worse} raises any safety concern.",
  }
  scores = {better: score_better, worse: score_worse}
  return render_judgment(scores["A"], scores["B"], reasoning)


def generate_text_pairs(n: int, seed: int, kinds: Iterable[str] = ("colour",),
                        prefix: str = "syn") -> list[PreferenceRecord]:
  """`n` text preference records, the same for the same `seed`.

  Args:
    n: number of records.
    seed: everything (facts picked, wrong answers, A/B order, scores) follows it.
    kinds: which fact families to draw from ("colour", "sum").
    prefix: id prefix, so train and eval sets from different seeds differ in ids.
  """
  kinds = list(kinds)
  unknown = [k for k in kinds if k not in KINDS]
  if unknown:
    raise ValueError(f"unknown synthetic kinds {unknown}; known: {sorted(KINDS)}")
  rng = random.Random(seed)
  records = []
  for i in range(n):
    kind = kinds[i % len(kinds)]
    prompt, good, bad, subject = KINDS[kind](rng)
    good_first = rng.random() < 0.5
    label = "A" if good_first else "B"
    better, worse = ("A", "B") if good_first else ("B", "A")
    score_good, score_bad = rng.randint(7, 10), rng.randint(1, 4)
    records.append(PreferenceRecord(
        id=f"{prefix}-{seed}-{i}", prompt=prompt,
        response_a=good if good_first else bad, response_b=bad if good_first else good,
        label=label, scores={better: score_good, worse: score_bad},
        rationale=_rationale(better, worse, subject, score_good, score_bad, good, bad),
        subset=kind))
  return records
