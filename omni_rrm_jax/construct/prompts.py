"""The prompts `construct` starts from: JSONL rows of text plus media paths.

  {"id": "p-1", "prompt": "What is in the picture?", "media": {"images": ["a.png"]}}

`media` (optional) has the keys of a native record's media (`images`,
`video`, `audio`); paths resolve under the media root and must exist. The
modality is the first medium present (images, video, audio), else text. A row
that cannot be used is skipped and counted (or, with `strict`, stops the run
with its file and line); a repeated id is such a row.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.records import BadRecord, empty_media, resolve_media_path

_MEDIA_MODALITY = (("images", "image"), ("video", "video"), ("audio", "audio"))


@dataclasses.dataclass(frozen=True)
class Prompt:
  """One prompt to build a pair for; media paths as written (relative to the root)."""

  id: str
  prompt: str
  modality: str
  media: dict[str, Any]


def _media(raw: Any, media_root: str) -> dict[str, Any]:
  media = empty_media()
  if raw is None:
    return media
  if not isinstance(raw, dict):
    raise BadRecord("media must be an object", repr(raw)[:80])
  unknown = sorted(set(raw) - set(media))
  if unknown:
    raise BadRecord("unknown media key", ", ".join(unknown))
  images = raw.get("images") or []
  if not isinstance(images, list):
    raise BadRecord("media.images must be a list", repr(images)[:80])
  media["images"] = list(images)
  media["video"], media["audio"] = raw.get("video"), raw.get("audio")
  for path in [*media["images"], media["video"], media["audio"]]:
    if path is not None:
      resolve_media_path(media_root, path, must_exist=True)
  return media


def _prompt(row: Any, media_root: str) -> Prompt:
  if not isinstance(row, dict):
    raise BadRecord("row must be a JSON object")
  record_id, text = row.get("id"), row.get("prompt")
  if not isinstance(record_id, str) or not record_id:
    raise BadRecord("missing field 'id'" if record_id is None else "id must be a non-empty string")
  if not isinstance(text, str) or not text.strip():
    raise BadRecord("prompt must be a non-empty string")
  media = _media(row.get("media"), media_root)
  modality = next((m for key, m in _MEDIA_MODALITY if media[key]), "text")
  return Prompt(record_id, text, modality, media)


def read_prompts(path: str, media_root: str, *, strict: bool = False,
                 max_record_bytes: int = 0) -> tuple[list[Prompt], BadRecordCounter]:
  """The usable prompts of a JSONL file, in file order, and the count of the rest.

  Raises:
    FileNotFoundError: no such file.
    BadRecord: with `strict`, the first unusable row (its `where` is file:line).
  """
  counter, prompts, seen = BadRecordCounter(), [], set()
  with open(path, "rb") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{path}:{line_no}"
      try:
        if max_record_bytes and len(line) > max_record_bytes:
          raise BadRecord("record too large", f"{len(line)} bytes")
        try:
          row = json.loads(line)
        except (ValueError, RecursionError) as e:
          raise BadRecord("bad JSON", str(e)[:80]) from None
        prompt = _prompt(row, media_root)
        if prompt.id in seen:
          raise BadRecord("repeated id", prompt.id)
      except BadRecord as e:
        e.where = where
        if strict:
          raise
        counter.skip(e)
        continue
      seen.add(prompt.id)
      counter.keep()
      prompts.append(prompt)
  return prompts, counter
