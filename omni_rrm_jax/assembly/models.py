"""The tokenizer and the model a task builds from its `model` section.

A multimodal architecture (`model.architecture="Qwen2_5_VLForConditionalGeneration"`
or `"Qwen2_5OmniThinkerForConditionalGeneration"`) is built from
`model.config` (its text decoder) plus `model.vision` (and, for the Omni
thinker, `model.audio`) when there is no checkpoint; for the scalar RM it
becomes our `Qwen2_5_VLForSequenceClassification` /
`Qwen2_5OmniThinkerForSequenceClassification` (the same trunk with a score
head). Its placeholder token ids come from the tokenizer (random init) or
must agree with it (checkpoint).
"""

from __future__ import annotations

import os
from typing import Sequence

from omni_rrm_jax.core.multihost import written_by_one
from omni_rrm_jax.data.media_batching import media_token_ids
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.models import omni_config, qwen2_5_vl
from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.models.factory import from_config, hf_config_for
from omni_rrm_jax.models.pretrained import from_pretrained, load_hf_config


def tokenizer_for(tokenizer: str, model_path: str, workdir: str, texts: Sequence[str]):
  """The tokenizer folder `tokenizer`, else `model_path`'s, else a tiny BPE
  trained on `texts` into `workdir/tokenizer` (process 0 trains it)."""
  from transformers import AutoTokenizer

  folder = tokenizer or model_path
  if not folder:
    folder = os.path.join(workdir, "tokenizer")

    def train():
      if not os.path.exists(os.path.join(folder, "tokenizer_config.json")):
        train_tiny_tokenizer(texts, folder, vocab_size=512)

    written_by_one("the tokenizer", train)
  tok = AutoTokenizer.from_pretrained(folder)
  if tok.pad_token_id is None:
    raise ValueError(f"{folder}: the tokenizer has no pad token; set one in tokenizer_config.json")
  if not tok.chat_template:
    raise ValueError(f"{folder}: the tokenizer has no chat template")
  return tok, folder


# Multimodal generation architectures -> the score-head variant the scalar RM trains.
_CLASSIFIERS = {qwen2_5_vl.ARCHITECTURE: qwen2_5_vl.CLASSIFIER_ARCHITECTURE,
                omni_config.ARCHITECTURE: omni_config.CLASSIFIER_ARCHITECTURE}


def architecture_for(name: str, classifier: bool) -> str:
  """The architecture a task builds: a scalar RM (`classifier`) of a multimodal
  model needs a score head, so Qwen2.5-VL becomes our
  `Qwen2_5_VLForSequenceClassification` and the Omni thinker our
  `Qwen2_5OmniThinkerForSequenceClassification`."""
  if classifier:
    return _CLASSIFIERS.get(name, name)
  return name


def _mrope_section(head_dim: int) -> list[int]:
  # Qwen2.5-VL's proportions (16, 24, 24 of 64 frequencies) for any head size.
  half = head_dim // 2
  t = half // 4
  h = (half - t) // 2
  return [t, h, half - t - h]


def _media_ids(tokenizer, kinds: Sequence[str]) -> dict[str, int]:
  ids = media_token_ids(tokenizer)
  missing = [k for k in kinds if k not in ids]
  if missing:
    raise ValueError(f"the tokenizer has no {', '.join(missing)} token(s), which a "
                     "multimodal model needs (e.g. <|IMAGE|> / <|image_pad|>, <|AUDIO|>)")
  return ids


def _mm_text(text: dict, tokenizer) -> tuple[dict, bool]:
  """(text config with M-RoPE, tie_word_embeddings) of a multimodal model."""
  text = dict(text)
  text.pop("num_labels", None)
  # transformers' default is Qwen's real bos id, outside a tiny vocabulary.
  text.setdefault("bos_token_id", tokenizer.bos_token_id)
  tie = bool(text.pop("tie_word_embeddings", False))
  head_dim = text["hidden_size"] // text["num_attention_heads"]
  text["rope_parameters"] = {"rope_type": "default",
                             "rope_theta": float(text.pop("rope_theta", 10000.0)),
                             "mrope_section": _mrope_section(head_dim)}
  return text, tie


def _vision(vision, width: int) -> dict:
  vision = dict(vision, out_hidden_size=width)
  vision["fullatt_block_indexes"] = list(vision["fullatt_block_indexes"])
  return vision


def _vl_config(text: dict, vision, tokenizer, is_rm: bool) -> dict:
  """A transformers Qwen2.5-VL config dict: `text` (decoder fields) plus a vision tower."""
  ids = _media_ids(tokenizer, ("image", "video", "vision_start", "vision_end"))
  text, tie = _mm_text(text, tokenizer)
  hf = dict(text_config=text, vision_config=_vision(vision, text["hidden_size"]),
            image_token_id=ids["image"], video_token_id=ids["video"],
            vision_start_token_id=ids["vision_start"], vision_end_token_id=ids["vision_end"],
            tie_word_embeddings=tie)
  if is_rm:
    hf.update(num_labels=1, pad_token_id=tokenizer.pad_token_id)
  return hf


def _omni_config(text: dict, vision, audio, tokenizer, is_rm: bool) -> dict:
  """A transformers Qwen2.5-Omni thinker config dict: `text` plus vision and audio towers.

  The vision tower's `tokens_per_second` becomes the thinker's
  `position_id_per_seconds` (its temporal ids per second).
  """
  ids = _media_ids(tokenizer, ("image", "video", "audio", "vision_start", "vision_end",
                               "audio_start", "audio_end"))
  text, tie = _mm_text(text, tokenizer)
  vision = _vision(vision, text["hidden_size"])
  per_second = vision.pop("tokens_per_second", 25)
  hf = dict(text_config=text, vision_config=vision,
            audio_config=dict(audio, output_dim=text["hidden_size"]),
            image_token_index=ids["image"], video_token_index=ids["video"],
            audio_token_index=ids["audio"], vision_start_token_id=ids["vision_start"],
            vision_end_token_id=ids["vision_end"], audio_start_token_id=ids["audio_start"],
            audio_end_token_id=ids["audio_end"], position_id_per_seconds=per_second,
            tie_word_embeddings=tie)
  if is_rm:
    hf.update(num_labels=1, pad_token_id=tokenizer.pad_token_id)
  return hf


def _random_init_config(m, tokenizer, architecture: str, is_rm: bool) -> dict:
  hf = dict(m.config)
  hf.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id)
  if is_rm:
    hf["num_labels"] = 1
  model_type = get_architecture(architecture).model_type
  if model_type == "qwen2_5_vl":
    return _vl_config(hf, dict(m.vision), tokenizer, is_rm)
  if model_type == omni_config.MODEL_TYPE:
    return _omni_config(hf, dict(m.vision), dict(m.audio), tokenizer, is_rm)
  return hf


def check_media_tokens(model_cfg, tokenizer) -> None:
  """A multimodal model's placeholder ids must be the tokenizer's, or media
  features would land on the wrong tokens."""
  if not hasattr(model_cfg, "host_inputs"):
    return
  ids = media_token_ids(tokenizer)
  kinds = [("image", model_cfg.image_token_id), ("video", model_cfg.video_token_id)]
  if getattr(model_cfg, "audio_token_id", None) is not None:
    kinds.append(("audio", model_cfg.audio_token_id))
  for kind, ours in kinds:
    if ids.get(kind) != ours:
      raise ValueError(f"the model's {kind}_token_id is {ours} but the tokenizer's {kind} "
                       f"placeholder is {ids.get(kind)}; use the checkpoint's own tokenizer")


def model_config(m, tokenizer, *, classifier: bool):
  """The config of the model `build_model` makes from the `model` section `m`,
  without building it."""
  architecture = architecture_for(m.architecture, classifier)
  arch = get_architecture(architecture)
  if m.path:
    arch, hf = load_hf_config(m.path, architecture)
  else:
    hf = hf_config_for(architecture, _random_init_config(m, tokenizer, architecture, classifier))
  return arch.make_config(hf, scan_layers=m.get("scan_layers", False))


def build_model(m, tokenizer, mesh, rules, *, classifier: bool, seed: int):
  """The `model` section `m`'s model: a Hugging Face checkpoint (with a fresh
  score head for a `classifier`), or a random init."""
  kw = dict(mesh=mesh, rules=rules, dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat,
            attention=m.attention, scan_layers=m.scan_layers)
  is_rm = classifier
  architecture = architecture_for(m.architecture, classifier)
  if m.path:
    extra = dict(num_labels=1, pad_token_id=tokenizer.pad_token_id) if is_rm else {}
    # A reward model's head is new when it starts from an LM, and dropped when
    # an LM (e.g. a judge) starts from a reward model's trunk.
    model = from_pretrained(m.path, architecture=architecture,
                            init_missing=("score",) if is_rm else (),
                            ignore_unused=() if is_rm else ("score.",), seed=seed,
                            **extra, **kw)
  else:
    hf = _random_init_config(m, tokenizer, architecture, is_rm)
    model = from_config(architecture, hf, seed=seed, **kw)
  check_media_tokens(model.cfg, tokenizer)
  return model
