"""One preference-record schema for every modality, and its checks.

A `PreferenceRecord` is one prompt with two candidate responses and a verdict.
Every reader in `readers.py` produces these, whatever the source format, so the
rest of the pipeline (templates, tokenisation, evaluation) sees a single shape.

Native JSONL format, one object per line (`to_json` / `from_json`):

  {"id": "ex-1", "prompt": "...", "response_a": "...", "response_b": "...",
   "label": "A", "modality": "image",
   "media": {"images": ["imgs/1.jpg"], "video": null, "audio": null},
   "scores": {"A": 8, "B": 3}, "rationale": "...", "subset": "chat",
   "group": {"id": "item-7", "a": "chosen/0", "b": "rejected/2"}}

`label` says which response is better: "A" (response_a), "B" (response_b) or
"equal". `media`, `scores`, `rationale`, `subset` and `group` may be omitted.
`group` ties together the pairs read from one benchmark item that ranks more
than two candidates (RewardBench 2's best-of-4): the item's id and the names
of the candidates shown as A and B ("chosen/<i>" or "rejected/<j>"), so the
item's score can be rebuilt from its pairs. Extra
top-level keys are ignored so that files can carry their own metadata; an
unknown key inside `media` is an error, since a misspelt one would silently
drop an image.

What `validate_record` rejects (raises `BadRecord`, so readers skip the row):
missing or mistyped fields, text that is not valid Unicode (a lone surrogate
from a "\\ud800" escape), an unknown label or modality, a modality without its
media, media on a text record, scores outside 0-10, an empty prompt, and two
responses that are identical after trimming whitespace (nothing to learn).
What it keeps but `degeneracies` reports (readers count it): a response that is
empty, e.g. an HH-RLHF assistant that said nothing, which is a legitimate
"refuse" choice when the other answer is harmful.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, get_args

Label = Literal["A", "B", "equal"]
Modality = Literal["text", "image", "video", "audio"]
LABELS: tuple[str, ...] = get_args(Label)
MODALITIES: tuple[str, ...] = get_args(Modality)
MAX_SCORE = 10

_REQUIRED = ("id", "prompt", "response_a", "response_b", "label", "modality")
_MEDIA_KEYS = ("images", "video", "audio")
# The media field each modality cannot do without.
_MODALITY_MEDIA = {"image": "images", "video": "video", "audio": "audio"}


class BadRecord(Exception):
  """A record that cannot be used, with a reason fit for counting.

  Attributes:
    reason: a short stable description ("missing field 'prompt'"); records with
      the same problem share it, so counters can group by it.
    detail: the offending value or extra context, or None.
    where: "file:line" of the record when known, else None.
  """

  def __init__(self, reason: str, detail: str | None = None, where: str | None = None):
    super().__init__(reason)
    self.reason = reason
    self.detail = detail
    self.where = where

  @property
  def message(self) -> str:
    """The reason with its detail, without the location."""
    return f"{self.reason}; {self.detail}" if self.detail else self.reason

  def __str__(self) -> str:
    return f"{self.where}: {self.message}" if self.where else self.message


def empty_media() -> dict[str, Any]:
  """The media field of a record without media."""
  return {"images": [], "video": None, "audio": None}


@dataclasses.dataclass(frozen=True)
class PreferenceRecord:
  """One pairwise preference example, for any modality.

  Attributes:
    id: unique within its data set; also seeds the A/B order of converted data.
    prompt: the user turn (or a whole earlier dialogue, for HH-RLHF).
    response_a: first candidate response.
    response_b: second candidate response.
    label: "A" or "B" names the better response; "equal" is a tie.
    modality: "text", "image", "video" or "audio".
    media: {"images": [paths], "video": path or None, "audio": path or None};
      paths are relative to a media root chosen at read time. Treat as read-only.
    scores: {"A": 0-10, "B": 0-10} when the source rates each response, else
      None.
    rationale: a written justification of the verdict, or None.
    subset: the source split (for per-subset accuracy), or None.
    group: {"id", "a", "b"} for a pair that is one of several from a
      many-candidate item (see the module docstring), else None.
  """

  id: str
  prompt: str
  response_a: str
  response_b: str
  label: Label
  modality: Modality = "text"
  media: dict[str, Any] = dataclasses.field(default_factory=empty_media)
  scores: dict[str, int] | None = None
  rationale: str | None = None
  subset: str | None = None
  group: dict[str, str] | None = None

  def media_paths(self) -> list[str]:
    """Every media path the record refers to, images first."""
    paths = list(self.media["images"])
    paths += [self.media[k] for k in ("video", "audio") if self.media[k]]
    return paths


def _string(raw: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
  value = raw.get(key)
  if value is None:
    if optional:
      return None
    raise BadRecord(f"missing field {key!r}")
  if not isinstance(value, str):
    raise BadRecord(f"{key} must be a string", f"got {type(value).__name__}")
  return _encodable(key, value)


def _encodable(key: str, text: str) -> str:
  """`text`, if it is valid Unicode: JSON's "\\ud800" escapes decode to lone
  surrogates, which no tokenizer, file name or UTF-8 writer accepts."""
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    raise BadRecord("lone surrogate in text", f"{key}, character {e.start}") from None
  return text


def _media(raw: Any) -> dict[str, Any]:
  if raw is None:
    return empty_media()
  if not isinstance(raw, Mapping):
    raise BadRecord("media must be an object", f"got {type(raw).__name__}")
  unknown = sorted(set(raw) - set(_MEDIA_KEYS))
  if unknown:
    # A typo here would silently drop an image, so it is an error, not ignored.
    raise BadRecord("unknown media key", f"got {unknown[0]!r}")
  images = raw.get("images") or []
  if isinstance(images, str) or not isinstance(images, list):
    raise BadRecord("media.images must be a list of strings")
  if not all(isinstance(p, str) and p for p in images):
    raise BadRecord("media.images must be a list of strings")
  media = {"images": [_encodable("media.images", p) for p in images], "video": None,
           "audio": None}
  for key in ("video", "audio"):
    value = raw.get(key)
    if value is not None and not (isinstance(value, str) and value):
      raise BadRecord(f"media.{key} must be a path string or null")
    media[key] = value if value is None else _encodable(f"media.{key}", value)
  return media


def _scores(raw: Any) -> dict[str, int] | None:
  if raw is None:
    return None
  if not isinstance(raw, Mapping):
    raise BadRecord("scores must be an object with keys A and B")
  scores = {}
  for key in ("A", "B"):
    value = raw.get(key)
    # bool is an int subclass; True is not a score.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SCORE:
      raise BadRecord(f"scores.{key} must be an integer 0-{MAX_SCORE}", f"got {value!r}")
    scores[key] = value
  return scores


_GROUP_KEYS = ("id", "a", "b")


def _group(raw: Any) -> dict[str, str] | None:
  if raw is None:
    return None
  if not isinstance(raw, Mapping) or set(raw) != set(_GROUP_KEYS):
    raise BadRecord("group must be an object with keys id, a and b")
  if not all(isinstance(raw[k], str) and raw[k] for k in _GROUP_KEYS):
    raise BadRecord("group.id, group.a and group.b must be non-empty strings")
  return {k: _encodable(f"group.{k}", raw[k]) for k in _GROUP_KEYS}


def validate_record(raw: Any, where: str | None = None) -> PreferenceRecord:
  """Checks a native-format dict and builds the record.

  Args:
    raw: the decoded JSON object.
    where: "file:line" of the row, attached to a raised BadRecord.

  Returns:
    The record, with `media` normalised to all three keys.

  Raises:
    BadRecord: with a precise reason, e.g. "missing field 'prompt'".
  """
  try:
    return _validate(raw)
  except BadRecord as e:
    e.where = e.where or where
    raise


def _validate(raw: Any) -> PreferenceRecord:
  if not isinstance(raw, Mapping):
    raise BadRecord("row is not a JSON object", f"got {type(raw).__name__}")
  for key in _REQUIRED:
    if key not in raw or raw[key] is None:
      raise BadRecord(f"missing field {key!r}")
  record_id = _string(raw, "id")
  if not record_id:
    raise BadRecord("empty id")
  prompt = _string(raw, "prompt")
  response_a = _string(raw, "response_a")
  response_b = _string(raw, "response_b")
  label = raw["label"]
  if label not in LABELS:
    raise BadRecord(f"label must be one of {', '.join(LABELS)}", f"got {label!r}")
  modality = raw["modality"]
  if modality not in MODALITIES:
    raise BadRecord(f"modality must be one of {', '.join(MODALITIES)}", f"got {modality!r}")
  media = _media(raw.get("media"))
  has_media = bool(media["images"] or media["video"] or media["audio"])
  if modality == "text" and has_media:
    raise BadRecord("modality text must not have media")
  needed = _MODALITY_MEDIA.get(modality)
  if needed and not media[needed]:
    raise BadRecord(f"modality {modality} requires media.{needed}")
  if not prompt.strip():
    raise BadRecord("empty prompt")
  if response_a.strip() == response_b.strip():
    raise BadRecord("identical responses")
  return PreferenceRecord(
      id=record_id,
      prompt=prompt,
      response_a=response_a,
      response_b=response_b,
      label=label,
      modality=modality,
      media=media,
      scores=_scores(raw.get("scores")),
      rationale=_string(raw, "rationale", optional=True),
      subset=_string(raw, "subset", optional=True),
      group=_group(raw.get("group")),
  )


def degeneracies(record: PreferenceRecord) -> list[str]:
  """Problems that leave a record usable but worth counting."""
  if not record.response_a.strip() or not record.response_b.strip():
    return ["empty response"]
  return []


def to_json(record: PreferenceRecord) -> str:
  """One line of the native JSONL format (no trailing newline)."""
  return json.dumps(dataclasses.asdict(record), ensure_ascii=False)


def from_json(line: str, where: str | None = None) -> PreferenceRecord:
  """Parses one native JSONL line; raises BadRecord on bad JSON or fields."""
  try:
    raw = json.loads(line)
  except json.JSONDecodeError as e:
    raise BadRecord("bad JSON", str(e), where) from None
  return validate_record(raw, where)


def resolve_media_path(media_root: str | os.PathLike[str], path: str, *,
                       must_exist: bool = False) -> Path:
  """Resolves a record's media path and insists it stays under `media_root`.

  Records come from data we did not write, so a path is untrusted: `..`
  segments, absolute paths elsewhere, and symlinks inside the root that point
  out of it are all refused. An absolute path that lies inside the root is
  accepted.

  Args:
    media_root: the directory configured for this data set's media.
    path: the path as written in the record.
    must_exist: also require the file to exist.

  Returns:
    The resolved absolute path.

  Raises:
    BadRecord: "media path escapes media root", "media file not found", or
      "invalid media path" / "lone surrogate in text" for a path no file
      system can hold.
  """
  if not isinstance(path, str) or not path or "\x00" in path:
    raise BadRecord("invalid media path", repr(path))
  _encodable("media path", path)
  root = Path(media_root).resolve()
  # resolve() follows every symlink, so the containment test sees the real
  # target, not the name the record used.
  resolved = (root / path).resolve()
  if not resolved.is_relative_to(root):
    raise BadRecord("media path escapes media root", repr(path))
  if must_exist and not resolved.is_file():
    raise BadRecord("media file not found", repr(path))
  return resolved


def write_jsonl(records: Iterable[PreferenceRecord], path: str) -> str:
  """Writes records in the native JSONL format; returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for record in records:
      f.write(to_json(record) + "\n")
  return path
