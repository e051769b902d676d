"""Reading safetensors checkpoints one tensor at a time, into numpy."""

from __future__ import annotations

import json
import os
from typing import Iterator

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy for the reader)
import numpy as np
from safetensors import safe_open

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointReader:
  """A name -> tensor view over one safetensors file or an indexed set of shards.

  Tensors are read on demand, so at most one tensor of the checkpoint is held
  in host memory at a time by the loader.
  """

  def __init__(self, folder: str):
    self.folder = folder
    index_path = os.path.join(folder, INDEX_FILE)
    single_path = os.path.join(folder, SINGLE_FILE)
    if os.path.exists(index_path):
      with open(index_path, encoding="utf-8") as f:
        try:
          weight_map = json.load(f)["weight_map"]
        except (ValueError, KeyError) as e:
          raise ValueError(f"{index_path}: not a valid safetensors index ({e})") from None
      self._file_of = {name: os.path.join(folder, fname) for name, fname in weight_map.items()}
    elif os.path.exists(single_path):
      with safe_open(single_path, framework="numpy") as f:
        self._file_of = {name: single_path for name in f.keys()}
    else:
      raise FileNotFoundError(
          f"{folder}: no {SINGLE_FILE} or {INDEX_FILE} (weights must be safetensors)")
    for path in sorted(set(self._file_of.values())):
      if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: shard named in {INDEX_FILE} is missing")
    self._handles: dict[str, object] = {}

  def names(self) -> list[str]:
    return sorted(self._file_of)

  def __contains__(self, name: str) -> bool:
    return name in self._file_of

  def _handle(self, path: str):
    if path not in self._handles:
      self._handles[path] = safe_open(path, framework="numpy")
    return self._handles[path]

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._handle(self._file_of[name]).get_slice(name).get_shape())

  def get(self, name: str) -> np.ndarray:
    return self._handle(self._file_of[name]).get_tensor(name)

  def close(self) -> None:
    self._handles.clear()

  def __enter__(self) -> "CheckpointReader":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())
