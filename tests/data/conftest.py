"""Fixtures shared by the data tests."""

import pytest
from transformers import AutoTokenizer

from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer


@pytest.fixture(scope="session")
def tok(tmp_path_factory):
  """A tiny BPE tokenizer trained on arithmetic sentences (vocabulary 400)."""
  folder = tmp_path_factory.mktemp("tok")
  texts = [f"what is {i} plus {i + 1}? it is {2 * i + 1}. the cat sat." for i in range(300)]
  train_tiny_tokenizer(texts, folder, vocab_size=400)
  return AutoTokenizer.from_pretrained(str(folder))
