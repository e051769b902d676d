"""A tiny exported scalar RM (random weights, a tiny tokenizer) for the eval tasks' tests."""

from __future__ import annotations

import pytest

import omni_rrm_jax as orj
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.models.hf_save import save_pretrained
from omni_rrm_jax.synthetic.mixture import mixed_pairs
from omni_rrm_jax.synthetic.corpus import corpus

MAX_LENGTH = 128


@pytest.fixture(scope="session")
def rm_folder(tmp_path_factory) -> str:
  from transformers import AutoTokenizer

  root = tmp_path_factory.mktemp("bench_rm")
  train_tiny_tokenizer(corpus(mixed_pairs(200, 0, ["colour", "sum"])), root / "tok",
                       vocab_size=400)
  tok = AutoTokenizer.from_pretrained(root / "tok")
  model = orj.from_config("Qwen2ForSequenceClassification", dict(
      vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
      num_labels=1, tie_word_embeddings=False), seed=5)
  return save_pretrained(model, str(root / "hf"), tokenizer_dir=str(root / "tok"))
