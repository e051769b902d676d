"""What the training tasks share before the loop: data, tokenizer, model and media.

A multimodal architecture (`model.architecture="Qwen2_5_VLForConditionalGeneration"`
or `"Qwen2_5OmniThinkerForConditionalGeneration"`) is built from
`model.config` (its text decoder) plus `model.vision` (and, for the Omni
thinker, `model.audio`) when there is no checkpoint; for the scalar RM it
becomes our `Qwen2_5_VLForSequenceClassification` /
`Qwen2_5OmniThinkerForSequenceClassification` (the same trunk with a score
head). Its placeholder token ids come from the tokenizer (random init) or
must agree with it (checkpoint), and `media_spec` tells the encoder how to
decode media (audio too, for the thinker).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Sequence

from omni_rrm_jax.core.multihost import written_by_one
from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media_batching import MediaSpec, media_token_ids
from omni_rrm_jax.data.readers import read_records
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.synthetic import KINDS as TEXT_KINDS
from omni_rrm_jax.data.synthetic import corpus, generate_text_pairs, write_jsonl
from omni_rrm_jax.data.synthetic_media import generate_media_pairs
from omni_rrm_jax.data.synthetic_omni import generate_omni_pairs
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.models import omni_config, qwen2_5_vl
from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.models.factory import from_config, hf_config_for
from omni_rrm_jax.models.pretrained import from_pretrained, load_hf_config
from omni_rrm_jax.train.task_kind import TaskKind

log = logging.getLogger(__name__)


def load_split(path: str, fmt: str, *, strict: bool, media_root: str, limit: int = 0,
               name: str, max_record_bytes: int
               ) -> tuple[list[PreferenceRecord], BadRecordCounter]:
  """Reads a whole split, skipping (and counting) bad records."""
  counter = BadRecordCounter()
  records = list(read_records(path, fmt, counter=counter, strict=strict,
                              media_root=media_root or None, limit=limit or None,
                              max_record_bytes=max_record_bytes))
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
  """`n` synthetic records, an equal share per kind (text kinds, image / video
  colour pairs, audio tone pairs), interleaved so that any prefix mixes them."""
  text = [k for k in kinds if k in TEXT_KINDS]
  audio = [k for k in kinds if k == "audio"]
  media = [k for k in kinds if k not in TEXT_KINDS and k != "audio"]
  n_text = n * len(text) // len(kinds)
  n_audio = n * len(audio) // len(kinds)
  groups = [generate_text_pairs(n_text, seed, text, prefix=prefix) if text else []]
  if media:
    groups.append(generate_media_pairs(n - n_text - n_audio, seed, root, media, prefix=prefix))
  if audio:
    groups.append(generate_omni_pairs(n_audio, seed, root, kinds=("audio",), prefix=prefix)[0])
  # Round robin, in proportion to the group sizes.
  keyed = [((i + 0.5) / len(g), k, r) for k, g in enumerate(groups) for i, r in enumerate(g)]
  return [r for _, _, r in sorted(keyed, key=lambda x: x[:2])]


def data_splits(config, workdir: str):
  """(train records, eval records, {split: BadRecordCounter}).

  Without `config.data.train_path`, seeded synthetic pairs are generated into
  `workdir/data/` (process 0 writes them, the others wait and read them), media kinds
  ("image", "video", "audio") with their files under `workdir/data/media/`.
  """
  d = config.data
  train_path, eval_path = d.train_path, d.eval_path
  root = media_root(config, workdir)
  if not train_path:
    kinds = [k.strip() for k in d.synthetic_kinds.split(",") if k.strip()]
    folder = os.path.join(workdir, "data")
    train_path = os.path.join(folder, "train.jsonl")
    eval_path = eval_path or os.path.join(folder, "eval.jsonl")

    def generate():
      if os.path.exists(train_path):
        return
      train = _synthetic(d.synthetic_train, d.seed, kinds, "train", root)
      seen = {(r.prompt, r.response_a, r.response_b) for r in train if r.modality == "text"}
      held_out = [r for r in _synthetic(4 * d.synthetic_eval, d.seed + 1, kinds, "eval", root)
                  if (r.prompt, r.response_a, r.response_b) not in seen][:d.synthetic_eval]
      write_jsonl(held_out, eval_path)
      write_jsonl(train, train_path)

    written_by_one("synthetic data", generate)
  kw = dict(strict=d.strict, media_root=root if (d.media_root or not d.train_path) else "",
            max_record_bytes=d.max_record_bytes)
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


def _is_classifier(kind: TaskKind | None) -> bool:
  """Whether the task trains a sequence classifier; None is the GRPO policy (a causal LM)."""
  return kind is not None and kind.classifier


def architecture_for(config, kind: TaskKind | None) -> str:
  """The architecture a task builds: the scalar RM of a multimodal model needs a
  score head, so Qwen2.5-VL becomes our `Qwen2_5_VLForSequenceClassification`
  and the Omni thinker our `Qwen2_5OmniThinkerForSequenceClassification`."""
  name = config.model.architecture
  if _is_classifier(kind):
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


def _random_init_config(config, tokenizer, architecture: str) -> dict:
  m = config.model
  is_rm = get_architecture(architecture).is_classifier
  hf = dict(m.config)
  hf.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id)
  if not is_rm:
    hf.pop("num_labels", None)
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


def model_config(config, tokenizer, kind: TaskKind | None):
  """The config of the model `build_model` makes, without building it."""
  m = config.model
  architecture = architecture_for(config, kind)
  arch = get_architecture(architecture)
  if m.path:
    arch, hf = load_hf_config(m.path, architecture)
  else:
    hf = hf_config_for(architecture, _random_init_config(config, tokenizer, architecture))
  return arch.make_config(hf)


def build_model(config, tokenizer, mesh, rules, kind: TaskKind | None):
  """A Hugging Face checkpoint (with a fresh score head for an RM), or a random init.

  `kind` is the training task's `TaskKind`; None builds the GRPO policy (a causal LM).
  """
  m = config.model
  kw = dict(mesh=mesh, rules=rules, dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat)
  architecture = architecture_for(config, kind)
  is_rm = get_architecture(architecture).is_classifier
  if m.path:
    extra = dict(num_labels=1, pad_token_id=tokenizer.pad_token_id) if is_rm else {}
    # A reward model's head is new when it starts from an LM, and dropped when
    # an LM (e.g. a judge) starts from a reward model's trunk.
    model = from_pretrained(m.path, architecture=architecture,
                            init_missing=("score",) if is_rm else (),
                            ignore_unused=() if is_rm else ("score.",), seed=config.seed,
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


def make_media_spec(model_cfg, tokenizer, *, root: str, model_path: str, overrides,
                    patch_buckets: Sequence[int], audio_frame_buckets: Sequence[int] = (),
                    strict: bool = False) -> MediaSpec | None:
  """How an encoder decodes media for this model; None for a text model.

  Preprocessing: the checkpoint's `preprocessor_config.json` (if any), the
  towers' patch sizes and mel bins, then `overrides` (MediaConfig fields);
  the largest patch (audio frame) bucket caps the patches (frames) of one
  example, and the frame buckets travel with the spec to the batching.
  """
  if not hasattr(model_cfg, "host_inputs"):
    return None
  check_media_tokens(model_cfg, tokenizer)
  v = model_cfg.vision
  towers = dict(patch_size=v.patch_size, merge_size=v.spatial_merge_size,
                temporal_patch_size=v.temporal_patch_size)
  audio = getattr(model_cfg, "audio", None)
  if audio is not None:
    towers["feature_size"] = audio.num_mel_bins
  cfg = MediaConfig.from_preprocessor_config(
      _read_json(model_path, "preprocessor_config.json"),
      _read_json(model_path, "video_preprocessor_config.json") or None,
      **towers, **dict(overrides))
  return MediaSpec(root, cfg, model_cfg.host_inputs(), max_patches=max(patch_buckets),
                   strict=strict,
                   audio_frame_buckets=tuple(audio_frame_buckets) if audio is not None else ())


def media_spec(config, workdir: str, model_cfg, tokenizer) -> MediaSpec | None:
  """`make_media_spec` from a training config: `data.media` overrides,
  `data.patch_buckets`, `data.audio_frame_buckets`, `data.strict`."""
  d = config.data
  return make_media_spec(model_cfg, tokenizer, root=media_root(config, workdir),
                         model_path=config.model.path, overrides=d.media,
                         patch_buckets=d.patch_buckets,
                         audio_frame_buckets=d.audio_frame_buckets, strict=d.strict)


def texts_for_tokenizer(records: Sequence[PreferenceRecord]) -> list[str]:
  return corpus(records)
