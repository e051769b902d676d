"""Tests for the tiny Qwen-style tokenizer: trains, reloads offline, round-trips."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from omni_rrm_jax.data.tokenizer_train import (MEDIA_TOKENS, REASONING_TOKENS, SPECIAL_TOKENS,
                                               train_tiny_tokenizer)


_WORDS = (
    "the a reward model judge policy prefers rejects compares answer response question prompt "
    "helpful harmless honest careful concise verbose image video audio frame caption describe "
    "which better worse because reason rubric score accuracy length style polish instruction "
    "follow ignore explain summarize translate count list write story poem code function bug "
    "модель ответ вопрос лучше хуже причина 模型 回答 问题 更好 更差 原因 画像 音声"
).split()


def _sentences() -> list[str]:
  # A fixed pseudo-random walk over the words: varied enough to fill the
  # vocabulary, and the same every run.
  state, sentences = 7, []
  for i in range(400):
    words = []
    for _ in range(6 + i % 7):
      state = (state * 1103515245 + 12345) % 2**31
      words.append(_WORDS[state % len(_WORDS)])
    sentences.append(" ".join(words).capitalize() + (".", "?", "!")[i % 3])
  return sentences


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("tiny_tokenizer")
  train_tiny_tokenizer(_sentences(), out, vocab_size=512)
  return out


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
  return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_vocab_and_special_tokens(tokenizer):
  assert len(tokenizer) == 512
  assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"
  assert tokenizer.bos_token is None
  for token in SPECIAL_TOKENS + REASONING_TOKENS:
    ids = tokenizer.encode(f"x{token}y", add_special_tokens=False)
    assert tokenizer.convert_tokens_to_ids(token) in ids, token
    assert tokenizer.decode(ids) == f"x{token}y"
  ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + REASONING_TOKENS]
  assert len(set(ids)) == len(ids)
  assert set(MEDIA_TOKENS) <= set(tokenizer.all_special_tokens)


def test_reasoning_tokens_survive_skip_special_tokens(tokenizer):
  ids = tokenizer.encode("<|im_start|><think>why</think><answer>A</answer><|im_end|>")
  assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>why</think><answer>A</answer>"


@pytest.mark.parametrize("text", [
    "The reward model prefers the longer answer.",
    "  leading spaces, tabs\tand\n\nnewlines  ",
    "Unseen words: zyzzyva, quokka, 12345.67 & <tags> \" ' ` ~",
    "Эта модель оценивает ответ А.",
    "这个模型选择回答B。日本語もΕλληνικά и emoji 🤖👍",
])
def test_round_trip(tokenizer, text):
  ids = tokenizer.encode(text, add_special_tokens=False)
  assert tokenizer.decode(ids) == text


def test_merges_were_learned(tokenizer):
  text = "The reward model prefers the longer answer."
  assert len(tokenizer.encode(text)) < len(text.encode("utf-8")) / 2


def test_chat_template_renders_chatml(tokenizer):
  messages = [
      {"role": "system", "content": "You are a judge."},
      {"role": "user", "content": "Which is better?"},
      {"role": "assistant", "content": "<think>B is wrong.</think><answer>A</answer>"},
      {"role": "user",
       "content": [{"type": "image"}, {"type": "audio"}, {"type": "text", "text": "And now?"}]},
  ]
  text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  assert text == (
      "<|im_start|>system\nYou are a judge.<|im_end|>\n"
      "<|im_start|>user\nWhich is better?<|im_end|>\n"
      "<|im_start|>assistant\n<think>B is wrong.</think><answer>A</answer><|im_end|>\n"
      "<|im_start|>user\n<|vision_bos|><|IMAGE|><|vision_eos|><|audio_bos|><|AUDIO|><|audio_eos|>"
      "And now?<|im_end|>\n"
      "<|im_start|>assistant\n")
  no_prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False)
  assert no_prompt.endswith("Which is better?<|im_end|>\n")
  ids = tokenizer.apply_chat_template(messages[:2], tokenize=True, add_generation_prompt=True)
  ids = ids["input_ids"] if hasattr(ids, "keys") else ids
  assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
  assert tokenizer.decode(ids) == tokenizer.apply_chat_template(
      messages[:2], tokenize=False, add_generation_prompt=True)


def test_unknown_role_is_an_error(tokenizer):
  with pytest.raises(Exception, match="unknown chat role tool"):
    tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_training_is_deterministic(tokenizer_dir, tmp_path):
  train_tiny_tokenizer(_sentences(), tmp_path, vocab_size=512)
  for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    assert (tmp_path / name).read_bytes() == (tokenizer_dir / name).read_bytes(), name


def test_too_small_vocab_is_rejected(tmp_path):
  with pytest.raises(ValueError, match="vocab_size must be at least 270"):
    train_tiny_tokenizer(["hi"], tmp_path, vocab_size=300 - 40)
