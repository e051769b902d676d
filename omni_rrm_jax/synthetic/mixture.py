"""The tiny configs' synthetic source: colour facts and sums, colour images and
videos, and audio tone pairs, mixed in equal shares and written as JSONL."""

from __future__ import annotations

import os
from typing import Sequence

from omni_rrm_jax.data.records import PreferenceRecord, write_jsonl
from omni_rrm_jax.synthetic.colour_media import generate_media_pairs
from omni_rrm_jax.synthetic.colour_text import KINDS as TEXT_KINDS
from omni_rrm_jax.synthetic.colour_text import generate_text_pairs
from omni_rrm_jax.synthetic.omni import generate_omni_pairs

KINDS = (*TEXT_KINDS, "image", "video", "audio")


def parse_kinds(spec: str) -> list[str]:
  """"colour,image" -> ["colour", "image"]; an unknown kind is an error."""
  kinds = [k.strip() for k in spec.split(",") if k.strip()]
  unknown = [k for k in kinds if k not in KINDS]
  if unknown or not kinds:
    raise ValueError(f"data.synthetic_kinds={spec!r}: unknown kind(s) {unknown}; "
                     f"known: {', '.join(KINDS)}")
  return kinds


def mixed_pairs(n: int, seed: int, kinds: Sequence[str], prefix: str,
                media_root: str) -> list[PreferenceRecord]:
  """`n` records, an equal share per kind, interleaved so that any prefix mixes them."""
  text = [k for k in kinds if k in TEXT_KINDS]
  audio = [k for k in kinds if k == "audio"]
  media = [k for k in kinds if k not in TEXT_KINDS and k != "audio"]
  n_text = n * len(text) // len(kinds)
  n_audio = n * len(audio) // len(kinds)
  groups = [generate_text_pairs(n_text, seed, text, prefix=prefix) if text else []]
  if media:
    groups.append(generate_media_pairs(n - n_text - n_audio, seed, media_root, media,
                                       prefix=prefix))
  if audio:
    groups.append(generate_omni_pairs(n_audio, seed, media_root, kinds=("audio",),
                                      prefix=prefix)[0])
  # Round robin, in proportion to the group sizes.
  keyed = [((i + 0.5) / len(g), k, r) for k, g in enumerate(groups) for i, r in enumerate(g)]
  return [r for _, _, r in sorted(keyed, key=lambda x: x[:2])]


def write_splits(folder: str, media_root: str, *, kinds: Sequence[str], n_train: int,
                 n_eval: int, seed: int) -> tuple[str, str]:
  """Writes `folder/train.jsonl` and `folder/eval.jsonl` (media under `media_root`)
  unless they exist; held-out text pairs never repeat a training pair."""
  train_path = os.path.join(folder, "train.jsonl")
  eval_path = os.path.join(folder, "eval.jsonl")
  if not os.path.exists(train_path):
    train = mixed_pairs(n_train, seed, kinds, "train", media_root)
    seen = {(r.prompt, r.response_a, r.response_b) for r in train if r.modality == "text"}
    held_out = [r for r in mixed_pairs(4 * n_eval, seed + 1, kinds, "eval", media_root)
                if (r.prompt, r.response_a, r.response_b) not in seen][:n_eval]
    write_jsonl(held_out, eval_path)
    write_jsonl(train, train_path)
  return train_path, eval_path
