"""Turning decoder failures into one-line `BadRecord`s.

PIL, PyAV and libsndfile fail on damaged files with many exception types and
multi-line messages that embed absolute paths. A data set with one bad file
must skip that record and count it, so every decode error becomes a
`BadRecord` whose reason is stable ("unreadable image") and whose detail names
the file as the record wrote it. A file that decodes to NaN or Inf (a float
WAV can store them) is refused the same way ("non-finite audio"), before it
can turn a whole batch's loss into NaN.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from omni_rrm_jax.data.records import BadRecord

_MAX_DETAIL = 160


def display_name(path: str | os.PathLike[str], name: str | None) -> str:
  """The name a message uses for a file: the record's path when known."""
  return name if name is not None else str(path)


def check_file(path: str | os.PathLike[str], kind: str, name: str) -> Path:
  """Fails early, and clearly, on a missing or empty file.

  Args:
    path: the resolved file path.
    kind: "image", "video" or "audio", for the reason.
    name: how messages refer to the file.

  Raises:
    BadRecord: "media file not found" or "unreadable <kind>" (empty file).
  """
  path = Path(path)
  if not path.is_file():
    raise BadRecord("media file not found", repr(name))
  if path.stat().st_size == 0:
    raise BadRecord(f"unreadable {kind}", f"{name}: empty file")
  return path


def decode_error(kind: str, path: str | os.PathLike[str], name: str,
                 error: BaseException | str) -> BadRecord:
  """A `BadRecord` for a file a decoder could not read.

  Args:
    kind: "image", "video" or "audio".
    path: the resolved path (removed from the decoder's message).
    name: how the message refers to the file.
    error: the decoder's exception, or a description.

  Returns:
    BadRecord(f"unreadable {kind}", f"{name}: <first line of the error>").
  """
  text = str(error) if not isinstance(error, BaseException) else (
      str(error) or type(error).__name__)
  text = text.replace(f"'{path}'", "").replace(str(path), "")
  text = re.sub(r"\[Errno -?\d+\]\s*", "", text)  # FFmpeg's numeric codes mean nothing to a reader
  first = " ".join(text.strip().splitlines()[0].split()) if text.strip() else "decode failed"
  first = re.sub(r"\s+:", ":", first).rstrip(" :") or "decode failed"
  if len(first) > _MAX_DETAIL:
    first = first[:_MAX_DETAIL - 3] + "..."
  return BadRecord(f"unreadable {kind}", f"{name}: {first}")


def check_finite(values: np.ndarray, kind: str, name: str) -> np.ndarray:
  """Returns `values` if every element is finite, else refuses the file.

  Args:
    values: decoded samples, pixels or features.
    kind: "image", "video" or "audio", for the reason.
    name: how the message refers to the file.

  Raises:
    BadRecord(f"non-finite {kind}", f"{name}: <count> NaN/Inf values").
  """
  finite = np.isfinite(values)
  if not finite.all():
    bad = values.size - int(np.count_nonzero(finite))
    raise BadRecord(f"non-finite {kind}", f"{name}: {bad} NaN/Inf values")
  return values
