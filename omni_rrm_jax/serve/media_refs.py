"""A request's media references as files the encoders read.

A reference is a path under the server's media root, a `data:` URL
(`data:image/png;base64,...`) or `{"base64": "..."}`. Paths are resolved with
the same containment rule as data records (`data.records.resolve_media_path`:
`..`, absolute paths elsewhere and symlinks out of the root are refused);
inline bytes are written to a staging folder of the server's and removed when
the request is done.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from typing import Any

from omni_rrm_jax.data.records import BadRecord, resolve_media_path
from omni_rrm_jax.serve.bad_request import BadRequest

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[\w-]+=[^;,]*)*);base64,(.*)", re.S)
_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
             "image/gif": ".gif", "video/mp4": ".mp4", "video/webm": ".webm",
             "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav",
             "audio/flac": ".flac", "audio/mpeg": ".mp3", "audio/ogg": ".ogg"}


def _decode_base64(text: str, where: str) -> bytes:
  try:
    data = base64.b64decode(text, validate=True)
  except (binascii.Error, ValueError):
    raise BadRequest(f"{where}: media is not valid base64") from None
  if not data:
    raise BadRequest(f"{where}: media is empty")
  return data


class MediaStager:
  """Resolves the media references of one request (a context manager: staged
  files are deleted on exit).

  Args:
    media_root: where path references resolve; empty: paths are refused.
    staging_dir: where inline media are written.
  """

  def __init__(self, media_root: str, staging_dir: str):
    self.media_root, self.staging_dir = media_root, staging_dir
    self.staged: list[str] = []

  def __enter__(self) -> "MediaStager":
    return self

  def __exit__(self, *exc) -> None:
    for path in self.staged:
      try:
        os.remove(path)
      except OSError:
        pass
    self.staged.clear()

  def resolve(self, ref: Any, where: str) -> str:
    """The absolute path of media reference `ref` (`where` names it in errors)."""
    if isinstance(ref, dict):
      if set(ref) != {"base64"} or not isinstance(ref["base64"], str):
        raise BadRequest(f"{where}: a media object is {{\"base64\": \"...\"}}, got keys "
                         f"{sorted(map(str, ref))}")
      return self._stage(_decode_base64(ref["base64"], where), "")
    if not isinstance(ref, str) or not ref:
      raise BadRequest(f"{where}: media must be a path, a data: URL or {{\"base64\": ...}}")
    if ref.startswith("data:"):
      match = _DATA_URL.fullmatch(ref)
      if match is None:
        raise BadRequest(f"{where}: a data: URL must be data:<type>;base64,<data>")
      return self._stage(_decode_base64(match.group(3), where),
                         _SUFFIXES.get((match.group(1) or "").lower(), ""))
    if "://" in ref:
      raise BadRequest(f"{where}: only data: URLs are fetched, got {ref[:80]!r}")
    if not self.media_root:
      raise BadRequest(f"{where}: media paths need the server's serve.media_root; send the "
                       "bytes as a data: URL or base64")
    try:
      return str(resolve_media_path(self.media_root, ref, must_exist=True))
    except BadRecord as e:
      raise BadRequest(f"{where}: {e.message}") from None

  def _stage(self, data: bytes, suffix: str) -> str:
    fd, path = tempfile.mkstemp(suffix=suffix, dir=self.staging_dir)
    self.staged.append(path)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    return path
