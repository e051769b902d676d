"""Tiny random transformers models, saved to disk, for parity tests."""

from __future__ import annotations

import functools
import os
import tempfile

import numpy as np

VOCAB = 101
PAD = 0

# name -> (architecture, config kwargs). Every case has GQA (4 query heads
# over 2 key/value heads) and a padded batch; the set covers tied and untied
# embeddings and each supported rope-scaling type.
CASES = {
    "qwen2_lm": ("Qwen2ForCausalLM", dict(tie_word_embeddings=False)),
    "qwen2_lm_tied_linear": ("Qwen2ForCausalLM", dict(
        tie_word_embeddings=True, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                   "rope_theta": 10000.0})),
    "qwen2_lm_sliding": ("Qwen2ForCausalLM", dict(
        use_sliding_window=True, sliding_window=4, max_window_layers=1)),
    "qwen2_cls": ("Qwen2ForSequenceClassification", dict(num_labels=1)),
    "qwen3_lm_tied": ("Qwen3ForCausalLM", dict(tie_word_embeddings=True, head_dim=16)),
    "qwen3_lm_yarn": ("Qwen3ForCausalLM", dict(
        head_dim=16, rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                                      "original_max_position_embeddings": 8})),
    "qwen3_cls": ("Qwen3ForSequenceClassification", dict(num_labels=2, attention_bias=True)),
    "llama_lm_llama3": ("LlamaForCausalLM", dict(
        rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8,
                         "rope_theta": 500000.0})),
    "llama_lm_dynamic": ("LlamaForCausalLM", dict(
        max_position_embeddings=8, mlp_bias=True, attention_bias=True,
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})),
    "llama_cls": ("LlamaForSequenceClassification", dict(num_labels=1, tie_word_embeddings=True)),
}

BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            pad_token_id=PAD, bos_token_id=1, eos_token_id=2)

_ROOT = tempfile.mkdtemp(prefix="omni_rrm_hf_")


def hf_config(architecture: str, **kwargs):
  import transformers
  cls = getattr(transformers, architecture.replace("ForCausalLM", "Config")
                .replace("ForSequenceClassification", "Config"))
  return cls(**{**BASE, **kwargs})


@functools.cache
def saved_model(case: str) -> str:
  """Builds the case's model with torch (fixed seed), saves it, returns the folder."""
  import torch
  import transformers
  architecture, kwargs = CASES[case]
  torch.manual_seed(sum(map(ord, case)))
  model = getattr(transformers, architecture)(hf_config(architecture, **kwargs)).eval()
  # Non-trivial norms and biases, so a missed or misplaced one shows up, and
  # sharp attention (large q/k weights), so that a wrong rotary angle or mask
  # moves the logits well past the tolerance instead of hiding in a
  # near-uniform softmax.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight") or name.endswith(".bias"):
        p.add_(0.1 * torch.randn_like(p))
      if name.endswith(("q_proj.weight", "k_proj.weight")):
        p.mul_(15.0)
  folder = os.path.join(_ROOT, case)
  model.save_pretrained(folder)
  return folder


def padded_batch(seed: int = 0, length: int = 12):
  """Row 0 full, row 1 right-padded by 4, row 2 left-padded by 3."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(3, VOCAB, size=(3, length))
  mask = np.ones_like(ids)
  mask[1, -4:] = 0
  mask[2, :3] = 0
  ids[mask == 0] = PAD
  return ids, mask


def torch_outputs(folder: str, ids, mask, position_ids=None):
  import torch
  import transformers
  model = transformers.AutoModelForCausalLM if "Causal" in _arch(folder) else (
      transformers.AutoModelForSequenceClassification)
  m = model.from_pretrained(folder).eval()
  with torch.no_grad():
    kwargs = {}
    if position_ids is not None:
      kwargs["position_ids"] = torch.tensor(position_ids)
    return m(torch.tensor(ids), attention_mask=torch.tensor(mask), **kwargs).logits.numpy()


def _arch(folder: str) -> str:
  import json
  with open(os.path.join(folder, "config.json")) as f:
    return json.load(f)["architectures"][0]
