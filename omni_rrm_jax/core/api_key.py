"""API keys are read from files (a key on a command line shows in `ps`)."""

from __future__ import annotations


def read_api_key(path: str) -> str:
  """The key in file `path`, surrounding whitespace dropped; '' for an empty path.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file holds no key.
  """
  if not path:
    return ""
  with open(path, encoding="utf-8") as f:
    key = f.read().strip()
  if not key:
    raise ValueError(f"{path}: the API key file is empty")
  return key
