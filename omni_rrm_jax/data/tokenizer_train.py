"""A tiny Qwen-style tokenizer, trained in seconds, for tests and `:tiny` configs.

Real checkpoints bring their own tokenizer; tiny configs need one that loads
with `AutoTokenizer` offline, speaks ChatML like Qwen, and knows the tokens the
judge and the multimodal templates emit, without a multi-megabyte vocabulary.

Layout of the saved vocabulary: ids 0-9 are the special tokens (Qwen's chat
tokens, then the Qwen2.5-Omni media placeholders), then the 256 byte symbols
and the learned merges, and the last four ids are `<think>`, `</think>`,
`<answer>`, `</answer>`. These four are added tokens (never split) but not
special ones, as in Qwen3, so `decode(..., skip_special_tokens=True)` keeps
them for the verdict parser.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"  # Also the eos token: a chat turn ends generation.
MEDIA_TOKENS = (
    "<|vision_bos|>", "<|vision_eos|>", "<|IMAGE|>", "<|VIDEO|>",
    "<|audio_bos|>", "<|audio_eos|>", "<|AUDIO|>",
)
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, *MEDIA_TOKENS)
REASONING_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")

# ChatML as Qwen writes it, without Qwen's default system prompt (a tiny model
# has no use for it and it would make every test prompt longer). A message's
# content is a string, or a list of parts {"type": "text", "text": ...} /
# {"type": "image" | "video" | "audio"}; media parts become the Qwen2.5-Omni
# placeholders that the processor later expands to one token per patch/frame.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('unknown chat role ' ~ message['role']"
    " ~ '; expected system, user or assistant') -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' ~ message['role'] ~ '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}{{- '<|vision_bos|><|IMAGE|><|vision_eos|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_bos|><|VIDEO|><|vision_eos|>' -}}"
    "{%- elif part['type'] == 'audio' -%}{{- '<|audio_bos|><|AUDIO|><|audio_eos|>' -}}"
    "{%- else -%}{{- raise_exception('unknown content part type ' ~ part['type']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def train_tiny_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike[str],
                         vocab_size: int = 512, model_max_length: int = 32768) -> None:
  """Trains a byte-level BPE on `texts` and saves it in Hugging Face format.

  Byte-level, like Qwen's, so any text round-trips exactly through
  encode/decode whatever its script. Deterministic: the same texts give the
  same files.

  Args:
    texts: training sentences; read once, in order.
    out_dir: where `tokenizer.json`, `tokenizer_config.json` and the chat
      template go; `AutoTokenizer.from_pretrained(out_dir)` loads them.
    vocab_size: total size including special and added tokens. It is an upper
      bound: too little text yields fewer merges.
    model_max_length: the length the saved tokenizer reports as its limit.

  Raises:
    ValueError: when vocab_size cannot hold the bytes and the special tokens.
  """
  reserved = 256 + len(SPECIAL_TOKENS) + len(REASONING_TOKENS)
  if vocab_size < reserved:
    raise ValueError(
        f"vocab_size must be at least {reserved} (bytes + special tokens), got {vocab_size}")
  tokenizer = Tokenizer(models.BPE())
  # No normalizer: NFC or lower-casing would break exact round trips.
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size - len(REASONING_TOKENS),
      special_tokens=list(SPECIAL_TOKENS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False,
  )
  tokenizer.train_from_iterator(list(texts), trainer)
  tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])

  hf_tokenizer = PreTrainedTokenizerFast(
      tokenizer_object=tokenizer,
      eos_token=IM_END,
      pad_token=PAD_TOKEN,
      extra_special_tokens=[IM_START, *MEDIA_TOKENS],
      clean_up_tokenization_spaces=False,  # It would rewrite " ." as ".".
      model_max_length=model_max_length,
  )
  hf_tokenizer.chat_template = CHAT_TEMPLATE
  Path(out_dir).mkdir(parents=True, exist_ok=True)
  hf_tokenizer.save_pretrained(str(out_dir))
