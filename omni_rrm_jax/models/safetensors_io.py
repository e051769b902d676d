"""Reading safetensors checkpoints one tensor at a time, into numpy.

A checkpoint folder is untrusted input, so everything that can be wrong with
it is one `ValueError` naming the file: a truncated or garbage safetensors
file, an index that is not JSON or not a name -> file map, and an index whose
shard path leaves the folder (`../x.safetensors`, an absolute path, or a
symlink whose target lies outside it). The one place outside a folder a shard
may link to is the `blobs` folder of a Hugging Face hub cache, whose
`snapshots/<revision>` folders hold only links into it.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy for the reader)
import numpy as np
from safetensors import safe_open

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# safetensors' dtype codes -> numpy names, for messages and dtype checks.
DTYPE_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
    "U32": "uint32", "I32": "int32", "U64": "uint64", "I64": "int64",
    "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


def _first_line(error: BaseException) -> str:
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0][:200]


def _shard_path(folder: str, index_path: str, name: str, fname) -> str:
  """The shard file an index entry names, refused unless it lies in `folder`."""
  if not isinstance(fname, str) or not fname or "\x00" in fname:
    raise ValueError(f"{index_path}: tensor {name!r:.80} names an invalid shard file "
                     f"{fname!r:.80}")
  if os.path.isabs(fname):
    raise ValueError(f"{index_path}: shard {fname!r:.200} of tensor {name!r:.80} is an "
                     "absolute path; shards must be files inside the model folder")
  root = os.path.realpath(folder)
  roots = [root]
  if os.path.basename(os.path.dirname(root)) == "snapshots":  # a hub cache snapshot
    roots.append(os.path.join(os.path.dirname(os.path.dirname(root)), "blobs"))
  # realpath follows every symlink, so the test sees where the bytes really are.
  real = os.path.realpath(os.path.join(root, fname))
  if not any(os.path.commonpath([r, real]) == r for r in roots):
    raise ValueError(f"{index_path}: shard {fname!r:.200} of tensor {name!r:.80} lies outside "
                     "the model folder")
  return os.path.join(folder, fname)


def _read_index(folder: str, index_path: str) -> dict[str, str]:
  try:
    with open(index_path, encoding="utf-8") as f:
      weight_map = json.load(f)["weight_map"]
    if not isinstance(weight_map, dict):
      raise ValueError(f"weight_map is a {type(weight_map).__name__}, not an object")
  except (ValueError, KeyError, TypeError, RecursionError) as e:
    raise ValueError(f"{index_path}: not a valid safetensors index "
                     f"({type(e).__name__}: {_first_line(e)})") from None
  return {name: _shard_path(folder, index_path, name, fname)
          for name, fname in weight_map.items()}


def open_safetensors(path: str):
  """`safe_open(path)`, with a damaged file as one ValueError naming it."""
  try:
    return safe_open(path, framework="numpy")
  except Exception as e:  # SafetensorError (truncated, garbage) or OSError
    raise ValueError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None


class CheckpointReader:
  """A name -> tensor view over one safetensors file or an indexed set of shards.

  Tensors are read on demand, so at most one tensor of the checkpoint is held
  in host memory at a time by the loader.

  Raises (on construction):
    FileNotFoundError: no weights in the folder, or a shard named by the
      index is missing.
    ValueError: a damaged file or index, or a shard outside the folder.
  """

  def __init__(self, folder: str):
    self.folder = folder
    self._handles: dict[str, object] = {}
    index_path = os.path.join(folder, INDEX_FILE)
    single_path = os.path.join(folder, SINGLE_FILE)
    if os.path.exists(index_path):
      self._file_of = _read_index(folder, index_path)
    elif os.path.exists(single_path):
      self._file_of = {name: single_path for name in self._handle(single_path).keys()}
    else:
      raise FileNotFoundError(
          f"{folder}: no {SINGLE_FILE} or {INDEX_FILE} (weights must be safetensors)")
    for path in sorted(set(self._file_of.values())):
      if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: shard named in {INDEX_FILE} is missing")
      listed = set(self._handle(path).keys())
      absent = [n for n, p in self._file_of.items() if p == path and n not in listed]
      if absent:
        raise ValueError(f"{path}: has no tensor {absent[0]!r}, which {INDEX_FILE} places there")

  def names(self) -> list[str]:
    return sorted(self._file_of)

  def __contains__(self, name: str) -> bool:
    return name in self._file_of

  def file_of(self, name: str) -> str:
    """The file that holds tensor `name`."""
    return self._file_of[name]

  def _handle(self, path: str):
    if path not in self._handles:
      self._handles[path] = open_safetensors(path)
    return self._handles[path]

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._handle(self._file_of[name]).get_slice(name).get_shape())

  def dtype(self, name: str) -> str:
    """The stored dtype as a numpy name ("float32", "bfloat16", "int64", "bool", ...)."""
    code = self._handle(self._file_of[name]).get_slice(name).get_dtype()
    return DTYPE_NAMES.get(code, code)

  def get(self, name: str) -> np.ndarray:
    path = self._file_of[name]
    try:
      return self._handle(path).get_tensor(name)
    except Exception as e:  # a file changed or damaged since it was opened
      raise ValueError(f"{path}: cannot read tensor {name!r} ({_first_line(e)})") from None

  def close(self) -> None:
    self._handles.clear()

  def __enter__(self) -> "CheckpointReader":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())
