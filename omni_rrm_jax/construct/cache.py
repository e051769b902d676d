"""An on-disk cache of endpoint replies, keyed by the request, so a rerun asks nothing twice.

One JSON file per request under the cache folder, named by the SHA-256 of
(url, body): the body holds the model, the messages (media included) and the
sampling settings, so any change to what is asked is a new key. Files are
written to a temporary name and renamed, so a run killed mid-write leaves no
half file behind; a file that does not decode is treated as missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any


def request_key(url: str, body: Any) -> str:
  """The cache key of a request: hex SHA-256 of its URL and canonical JSON body."""
  canonical = json.dumps({"url": url, "body": body}, sort_keys=True, ensure_ascii=False,
                         separators=(",", ":"))
  return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ReplyCache:
  """Replies stored by request key under `folder`."""

  def __init__(self, folder: str):
    self.folder = folder
    os.makedirs(folder, exist_ok=True)

  def _path(self, key: str) -> str:
    return os.path.join(self.folder, key[:2], f"{key}.json")

  def get(self, key: str) -> Any | None:
    """The stored reply, or None when there is none (or it is unreadable)."""
    try:
      with open(self._path(key), encoding="utf-8") as f:
        return json.load(f)
    except (OSError, ValueError):
      return None

  def put(self, key: str, reply: Any) -> None:
    """Stores `reply` atomically (write to a temporary file, then rename)."""
    path = self._path(key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(reply, f, ensure_ascii=False)
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.unlink(tmp)
      raise
