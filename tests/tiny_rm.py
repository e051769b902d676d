"""One tiny exported scalar RM (random weights, a tiny tokenizer) for the whole test session.

The eval tasks, GRPO's model reward and the multi-process GRPO tests all score
with a random Qwen2 sequence classifier saved as an `rm` run exports it; they
share this one folder (built once per session by the `tiny_rm_folder` fixture
of `tests/conftest.py`) instead of each training a tokenizer and saving a
model of their own.
"""

from __future__ import annotations

import os

MAX_LENGTH = 128


def build_tiny_rm(root: str) -> str:
  """Trains the tokenizer, builds the RM (fixed seed), saves both under `root`;
  returns the Hugging Face folder."""
  from transformers import AutoTokenizer

  import omni_rrm_jax as orj
  from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
  from omni_rrm_jax.models.hf_save import save_pretrained
  from omni_rrm_jax.synthetic.corpus import corpus
  from omni_rrm_jax.synthetic.mixture import mixed_pairs

  tok_dir = os.path.join(root, "tok")
  train_tiny_tokenizer(corpus(mixed_pairs(200, 0, ["colour", "sum"])), tok_dir, vocab_size=400)
  tok = AutoTokenizer.from_pretrained(tok_dir)
  model = orj.from_config("Qwen2ForSequenceClassification", dict(
      vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
      num_labels=1, tie_word_embeddings=False), seed=5)
  return save_pretrained(model, os.path.join(root, "hf"), tokenizer_dir=tok_dir)
