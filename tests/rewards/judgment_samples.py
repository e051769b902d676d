"""Hand-written judgments for the reward tests."""

from __future__ import annotations

import json

REASONING = (
    "<think>1. Fluency: Response A reads well, Response B is choppy.\n"
    "2. Relevance: A answers the question about the image; B drifts.\n"
    "3. Accuracy: A counts three cats correctly, B says two.\n"
    "4. Reasoning: A explains each step, B does not.\n"
    "5. Safety: neither A nor B says anything harmful.</think>"
)


def judgment_text(*, drop: tuple[str, ...] = (), **overrides) -> str:
  """A valid judgment (A better, 8 vs 5) as JSON, with some keys overridden or dropped."""
  obj = {
      "score_A": 8,
      "score_B": 5,
      "better": "A",
      "reasoning": REASONING,
      "final_verdict": "<answer>[[A]]</answer>",
  }
  obj.update(overrides)
  for key in drop:
    del obj[key]
  return json.dumps(obj, ensure_ascii=False)
