"""The tiny configs' synthetic source: easy tasks of the omni generator, labelled
by noise-free teachers and mixed in equal shares.

A kind names a modality and its tasks (`KINDS`): "colour" (text: the colour of
an everyday object), "sum" (text: a small sum), "image" (the colour of a large
square), "video" (the colour of a square crossing the frame) and "audio" (every
audio task of the main job). All come from `synthetic.omni.generate_omni_pairs`,
so records, rationales and media are made one way for the tiny configs, the
tests and the main job.
"""

from __future__ import annotations

import os
from typing import Sequence

from omni_rrm_jax.data.records import PreferenceRecord, write_jsonl
from omni_rrm_jax.synthetic.audio import AUDIO_TASKS
from omni_rrm_jax.synthetic.omni import generate_omni_pairs

# kind -> (modality, omni task names)
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "colour": ("text", ("text-colour",)), "sum": ("text", ("text-sum",)),
    "image": ("image", ("image-square",)), "video": ("video", ("video-square",)),
    "audio": ("audio", tuple(AUDIO_TASKS))}


def parse_kinds(spec: str) -> list[str]:
  """"colour,image" -> ["colour", "image"]; an unknown kind is an error."""
  kinds = [k.strip() for k in spec.split(",") if k.strip()]
  unknown = [k for k in kinds if k not in KINDS]
  if unknown or not kinds:
    raise ValueError(f"data.synthetic_kinds={spec!r}: unknown kind(s) {unknown}; "
                     f"known: {', '.join(KINDS)}")
  return kinds


def mixed_pairs(n: int, seed: int, kinds: Sequence[str] = ("colour",), prefix: str = "syn",
                media_root: str | None = None, held_out: bool = False) -> list[PreferenceRecord]:
  """`n` records, an equal share per modality (a modality's kinds take turns),
  interleaved so that any prefix mixes them; the same for the same arguments.

  Args:
    n: number of records.
    seed: with `prefix`, seeds everything.
    kinds: names from `KINDS`.
    prefix: record id and media file name prefix.
    media_root: where media files go; needed only for media kinds.
    held_out: draw text pairs from the omni generator's held-out bucket.
  """
  unknown = [k for k in kinds if k not in KINDS]
  if unknown or not kinds:
    raise ValueError(f"unknown synthetic kinds {unknown}; known: {', '.join(KINDS)}")
  tasks: dict[str, list[str]] = {}
  for kind in kinds:
    modality, names = KINDS[kind]
    tasks.setdefault(modality, []).extend(n for n in names if n not in tasks.get(modality, []))
  if media_root is None and set(tasks) - {"text"}:
    raise ValueError(f"kinds {list(kinds)} write media files: a media_root is required")
  records, _ = generate_omni_pairs(n, seed, media_root or "", kinds=list(tasks), prefix=prefix,
                                   teacher_noise=0.0, held_out=held_out, tasks=tasks)
  return records


def write_splits(folder: str, media_root: str, *, kinds: Sequence[str], n_train: int,
                 n_eval: int, seed: int) -> tuple[str, str]:
  """Writes `folder/train.jsonl` and `folder/eval.jsonl` (media under `media_root`)
  unless they exist; held-out text pairs are never training pairs (the omni
  generator's held-out bucket)."""
  train_path = os.path.join(folder, "train.jsonl")
  eval_path = os.path.join(folder, "eval.jsonl")
  if not os.path.exists(train_path):
    write_jsonl(mixed_pairs(n_eval, seed + 1, kinds, "eval", media_root, held_out=True),
                eval_path)
    write_jsonl(mixed_pairs(n_train, seed, kinds, "train", media_root), train_path)
  return train_path, eval_path
