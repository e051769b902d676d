"""Fixtures of the hostile-input tests: a tiny checkpoint built with our own
helpers (nothing is downloaded) and a helper to damage copies of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TEXTS = [f"what is {i} plus {i + 1}? it is {2 * i + 1}. the cat sat." for i in range(200)]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
  """A tiny Qwen2 reward-model folder: config.json, model.safetensors, tokenizer."""
  from transformers import AutoTokenizer

  import omni_rrm_jax as orj
  from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer

  tok_dir = tmp_path_factory.mktemp("hostile_tok")
  train_tiny_tokenizer(TEXTS, tok_dir, vocab_size=320)
  tok = AutoTokenizer.from_pretrained(str(tok_dir))
  model = orj.from_config("Qwen2ForSequenceClassification", dict(
      vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
      num_attention_heads=2, num_key_value_heads=1, num_labels=1,
      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
  folder = tmp_path_factory.mktemp("hostile_model") / "model"
  orj.save_pretrained(model, str(folder), tokenizer_dir=str(tok_dir))
  return folder


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Path:
  """A private copy of `tiny_model` that a test may damage."""
  dst = tmp_path / "model"
  shutil.copytree(tiny_model, dst)
  return dst
