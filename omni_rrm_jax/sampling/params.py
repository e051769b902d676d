"""Sampling parameters: how each next token is chosen and when a row stops."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How `generate` chooses tokens.

  The object is hashable and static under `jax.jit`: `generate` compiles once
  per distinct `SamplingParams` (and prompt shape), so keep a run's params
  fixed rather than varying them per call.

  Attributes:
    temperature: logits are divided by it before sampling; must be > 0 unless
      `greedy`. `temperature=0` is accepted as a synonym for greedy.
    top_k: keep only the k most likely tokens (0 = off).
    top_p: nucleus sampling: keep the smallest set of most likely tokens whose
      probability (after temperature and top-k) reaches `top_p` (1.0 = off).
    max_new_tokens: the most tokens generated per row.
    greedy: take the arg-max token; temperature, top-k and top-p are ignored.
    num_samples: completions per prompt (the GRPO group size G).
  """
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  max_new_tokens: int = 64
  greedy: bool = False
  num_samples: int = 1

  def __post_init__(self):
    if self.temperature == 0 and not self.greedy:
      object.__setattr__(self, "greedy", True)
      object.__setattr__(self, "temperature", 1.0)
    if not self.temperature > 0:
      raise ValueError(f"temperature must be > 0 (or 0 for greedy), got {self.temperature}")
    if not isinstance(self.top_k, int) or self.top_k < 0:
      raise ValueError(f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
    if not isinstance(self.num_samples, int) or self.num_samples < 1:
      raise ValueError(f"num_samples must be an int >= 1, got {self.num_samples!r}")
