"""A tiny random Qwen2 causal LM with peaked outputs, saved to disk, and prompts for it.

The parity fixtures' models have near-uniform next-token distributions (init
std 0.02 over 101 tokens), where temperature barely matters and greedy picks
between near-ties. Scaling the vocabulary projection makes the distributions
peaked enough that a wrong temperature or filter is visible in sample
frequencies, and arg-max gaps wide enough that greedy tokens are decided by
the model, not by rounding.
"""

from __future__ import annotations

import functools
import os
import tempfile

import numpy as np

from tests.models.hf_fixtures import PAD, VOCAB, hf_config

_ROOT = tempfile.mkdtemp(prefix="omni_rrm_sampling_")

# Left padding per row: one full row, the rest of different lengths.
PADS = (0, 3, 5, 1, 6, 2, 4, 7)
PROMPT_LEN = 10


@functools.cache
def sharp_qwen2() -> str:
  """Builds the model with torch (fixed seed), saves it, returns the folder."""
  import torch
  import transformers
  torch.manual_seed(1234)
  config = hf_config("Qwen2ForCausalLM", tie_word_embeddings=False)
  model = transformers.Qwen2ForCausalLM(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith(("q_proj.weight", "k_proj.weight")):
        p.mul_(15.0)  # sharp attention: a wrong position or mask moves logits a lot
      if name.endswith(".bias") or name.endswith("norm.weight"):
        p.add_(0.1 * torch.randn_like(p))
      if name == "lm_head.weight":
        p.mul_(20.0)  # logits with a spread of several nats
  folder = os.path.join(_ROOT, "qwen2_sharp")
  model.save_pretrained(folder)
  return folder


def left_padded_prompts(seed: int = 0, pads=PADS, length: int = PROMPT_LEN):
  """(ids, mask) int32 [len(pads), length], row r left-padded by pads[r]."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(3, VOCAB, size=(len(pads), length)).astype(np.int32)
  mask = np.ones_like(ids)
  for row, pad in enumerate(pads):
    mask[row, :pad] = 0
  ids[mask == 0] = PAD
  return ids, mask
