"""What the training tasks share before the loop: data, tokenizer, model and media.

A multimodal architecture (`model.architecture="Qwen2_5_VLForConditionalGeneration"`)
is built from `model.config` (its text decoder) plus `model.vision` when there
is no checkpoint; for the scalar RM it becomes our
`Qwen2_5_VLForSequenceClassification` (the same trunk with a score head).
Its placeholder token ids come from the tokenizer (random init) or must agree
with it (checkpoint), and `media_spec` tells the encoder how to decode media.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Sequence

import jax

from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media_batching import MediaSpec, media_token_ids
from omni_rrm_jax.data.readers import read_records
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.synthetic import KINDS as TEXT_KINDS
from omni_rrm_jax.data.synthetic import corpus, generate_text_pairs, write_jsonl
from omni_rrm_jax.data.synthetic_media import generate_media_pairs
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.models import qwen2_5_vl
from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.models.factory import from_config, hf_config_for
from omni_rrm_jax.models.pretrained import from_pretrained, load_hf_config

log = logging.getLogger(__name__)


def load_split(path: str, fmt: str, *, strict: bool, media_root: str, limit: int = 0,
               name: str) -> tuple[list[PreferenceRecord], BadRecordCounter]:
  """Reads a whole split, skipping (and counting) bad records."""
  counter = BadRecordCounter()
  records = list(read_records(path, fmt, counter=counter, strict=strict,
                              media_root=media_root or None, limit=limit or None))
  log.info("%s data %s: %s", name, path, counter.summary())
  if not records:
    raise ValueError(f"{path}: no usable records ({counter.summary()})")
  return records, counter


def media_root(config, workdir: str) -> str:
  """Where record media paths resolve: `data.media_root`, else the synthetic
  media folder (no `data.train_path`), else the training file's folder."""
  d = config.data
  if d.media_root:
    return d.media_root
  if not d.train_path:
    return os.path.join(workdir, "data", "media")
  return os.path.dirname(os.path.abspath(d.train_path))


def _synthetic(n: int, seed: int, kinds: list[str], prefix: str, root: str):
  """`n` synthetic records, an equal share per kind (text kinds, then media kinds)."""
  text = [k for k in kinds if k in TEXT_KINDS]
  media = [k for k in kinds if k not in TEXT_KINDS]
  n_text = n * len(text) // len(kinds)
  records = generate_text_pairs(n_text, seed, text, prefix=prefix) if text else []
  if media:
    records += generate_media_pairs(n - n_text, seed, root, media, prefix=prefix)
  return records


def data_splits(config, workdir: str):
  """(train records, eval records, {split: BadRecordCounter}).

  Without `config.data.train_path`, seeded synthetic pairs are generated into
  `workdir/data/` (every process generates the same ones), media kinds
  ("image", "video") with their files under `workdir/data/media/`.
  """
  d = config.data
  train_path, eval_path = d.train_path, d.eval_path
  root = media_root(config, workdir)
  if not train_path:
    kinds = [k.strip() for k in d.synthetic_kinds.split(",") if k.strip()]
    folder = os.path.join(workdir, "data")
    train_path = os.path.join(folder, "train.jsonl")
    eval_path = eval_path or os.path.join(folder, "eval.jsonl")
    if not os.path.exists(train_path) and jax.process_index() == 0:
      train = _synthetic(d.synthetic_train, d.seed, kinds, "train", root)
      seen = {(r.prompt, r.response_a, r.response_b) for r in train if r.modality == "text"}
      held_out = [r for r in _synthetic(4 * d.synthetic_eval, d.seed + 1, kinds, "eval", root)
                  if (r.prompt, r.response_a, r.response_b) not in seen][:d.synthetic_eval]
      write_jsonl(held_out, eval_path)
      write_jsonl(train, train_path)
  kw = dict(strict=d.strict, media_root=root if (d.media_root or not d.train_path) else "")
  train, train_counter = load_split(train_path, d.train_format, name="train", **kw)
  counters = {"train": train_counter}
  evals: list[PreferenceRecord] = []
  if eval_path:
    evals, counters["eval"] = load_split(eval_path, d.eval_format, name="eval",
                                         limit=d.eval_limit, **kw)
  return train, evals, counters


def tokenizer_for(config, workdir: str, texts: Sequence[str]):
  """The configured tokenizer, the model folder's, or a tiny BPE trained on `texts`."""
  from transformers import AutoTokenizer

  folder = config.tokenizer or config.model.path
  if not folder:
    folder = os.path.join(workdir, "tokenizer")
    if not os.path.exists(os.path.join(folder, "tokenizer_config.json")):
      train_tiny_tokenizer(texts, folder, vocab_size=512)
  tok = AutoTokenizer.from_pretrained(folder)
  if tok.pad_token_id is None:
    raise ValueError(f"{folder}: the tokenizer has no pad token; set one in tokenizer_config.json")
  if not tok.chat_template:
    raise ValueError(f"{folder}: the tokenizer has no chat template")
  return tok, folder


def architecture_for(config) -> str:
  """The architecture a task builds: the scalar RM of a multimodal model needs a
  score head, so Qwen2.5-VL becomes our `Qwen2_5_VLForSequenceClassification`."""
  name = config.model.architecture
  if config.task == "rm" and name == qwen2_5_vl.ARCHITECTURE:
    return qwen2_5_vl.CLASSIFIER_ARCHITECTURE
  return name


def _mrope_section(head_dim: int) -> list[int]:
  # Qwen2.5-VL's proportions (16, 24, 24 of 64 frequencies) for any head size.
  half = head_dim // 2
  t = half // 4
  h = (half - t) // 2
  return [t, h, half - t - h]


def _vl_config(text: dict, vision, tokenizer, is_rm: bool) -> dict:
  """A transformers Qwen2.5-VL config dict: `text` (decoder fields) plus a vision tower."""
  ids = media_token_ids(tokenizer)
  missing = [k for k in ("image", "video", "vision_start", "vision_end") if k not in ids]
  if missing:
    raise ValueError(f"the tokenizer has no {', '.join(missing)} token(s), which a "
                     "multimodal model needs (e.g. <|IMAGE|> / <|image_pad|>)")
  text = dict(text)
  text.pop("num_labels", None)
  # transformers' default is Qwen's real bos id, outside a tiny vocabulary.
  text.setdefault("bos_token_id", tokenizer.bos_token_id)
  tie = bool(text.pop("tie_word_embeddings", False))
  head_dim = text["hidden_size"] // text["num_attention_heads"]
  text["rope_parameters"] = {"rope_type": "default",
                             "rope_theta": float(text.pop("rope_theta", 10000.0)),
                             "mrope_section": _mrope_section(head_dim)}
  vision = dict(vision, out_hidden_size=text["hidden_size"])
  vision["fullatt_block_indexes"] = list(vision["fullatt_block_indexes"])
  hf = dict(text_config=text, vision_config=vision, image_token_id=ids["image"],
            video_token_id=ids["video"], vision_start_token_id=ids["vision_start"],
            vision_end_token_id=ids["vision_end"], tie_word_embeddings=tie)
  if is_rm:
    hf.update(num_labels=1, pad_token_id=tokenizer.pad_token_id)
  return hf


def _random_init_config(config, tokenizer, architecture: str) -> dict:
  m = config.model
  is_rm = config.task == "rm"
  hf = dict(m.config)
  hf.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id)
  if not is_rm:
    hf.pop("num_labels", None)
  if get_architecture(architecture).model_type == "qwen2_5_vl":
    return _vl_config(hf, dict(m.vision), tokenizer, is_rm)
  return hf


def check_media_tokens(model_cfg, tokenizer) -> None:
  """A multimodal model's placeholder ids must be the tokenizer's, or media
  features would land on the wrong tokens."""
  if not hasattr(model_cfg, "host_inputs"):
    return
  ids = media_token_ids(tokenizer)
  for kind, ours in (("image", model_cfg.image_token_id), ("video", model_cfg.video_token_id)):
    if ids.get(kind) != ours:
      raise ValueError(f"the model's {kind}_token_id is {ours} but the tokenizer's {kind} "
                       f"placeholder is {ids.get(kind)}; use the checkpoint's own tokenizer")


def model_config(config, tokenizer):
  """The config of the model `build_model` makes, without building it."""
  m = config.model
  architecture = architecture_for(config)
  arch = get_architecture(architecture)
  if m.path:
    arch, hf = load_hf_config(m.path, architecture)
  else:
    hf = hf_config_for(architecture, _random_init_config(config, tokenizer, architecture))
  return arch.make_config(hf)


def build_model(config, tokenizer, mesh, rules):
  """A Hugging Face checkpoint (with a fresh score head for an RM), or a random init."""
  m = config.model
  kw = dict(mesh=mesh, rules=rules, dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat)
  is_rm = config.task == "rm"
  architecture = architecture_for(config)
  if m.path:
    extra = dict(num_labels=1, pad_token_id=tokenizer.pad_token_id) if is_rm else {}
    model = from_pretrained(m.path, architecture=architecture,
                            init_missing=("score",) if is_rm else (), seed=config.seed,
                            **extra, **kw)
  else:
    hf = _random_init_config(config, tokenizer, architecture)
    model = from_config(architecture, hf, seed=config.seed, **kw)
  check_media_tokens(model.cfg, tokenizer)
  return model


def _read_json(folder: str, name: str) -> dict:
  path = os.path.join(folder, name) if folder else ""
  if not path or not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def media_spec(config, workdir: str, model_cfg, tokenizer) -> MediaSpec | None:
  """How the encoder decodes media for this model; None for a text model.

  Preprocessing: the checkpoint's `preprocessor_config.json` (if any), the
  vision tower's patch sizes, then `data.media` overrides; the largest of
  `data.patch_buckets` caps the patches of one example.
  """
  if not hasattr(model_cfg, "host_inputs"):
    return None
  check_media_tokens(model_cfg, tokenizer)
  v, d = model_cfg.vision, config.data
  folder = config.model.path
  cfg = MediaConfig.from_preprocessor_config(
      _read_json(folder, "preprocessor_config.json"),
      _read_json(folder, "video_preprocessor_config.json") or None,
      patch_size=v.patch_size, merge_size=v.spatial_merge_size,
      temporal_patch_size=v.temporal_patch_size, **dict(d.media))
  return MediaSpec(media_root(config, workdir), cfg, model_cfg.host_inputs(),
                   max_patches=max(d.patch_buckets), strict=d.strict)


def texts_for_tokenizer(records: Sequence[PreferenceRecord]) -> list[str]:
  return corpus(records)
