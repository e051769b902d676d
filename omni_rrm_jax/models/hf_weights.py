"""Parameter paths <-> Hugging Face tensor names and layouts.

Module and parameter names follow transformers (`model.layers.0.self_attn.
q_proj`), so a tensor name is the parameter path joined by dots. Two layouts
differ: transformers stores a Linear weight as `[out, in]` where we store
`in_shape + out_shape` (q_proj as `[embed, heads, head_dim]`, recorded by the
kernel's `in_ndim` metadata), and a bias of a multi-dimensional output is flat
there.

A model with `scan_layers` holds each layer parameter once, stacked on a
leading `layers` axis (path `model.layers.self_attn.q_proj.kernel`, shape
`[L, ...]`); `layer_paths` maps it to the L per-layer paths
(`model.layers.{i}.self_attn.q_proj.kernel`) that name its checkpoint tensors,
so both layouts read and write the same files.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# Buffers some older checkpoints carry that are derived, not learned.
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
# Checkpoint dtypes a floating-point parameter is loaded (and cast) from. An
# integer or bool tensor where a weight belongs is a broken or foreign
# checkpoint, and float8 ones need their scales: both are refused, not cast.
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


LAYERS_AXIS = "layers"  # the leading axis of stacked layer parameters (`layer_stack.py`)


def is_stacked(metadata) -> bool:
  """Whether a parameter (by its metadata) holds every layer on a leading axis."""
  axes = metadata.get("logical_axes") or ()
  return bool(axes) and axes[0] == LAYERS_AXIS


def layer_path(path: Sequence[Any], index: int) -> tuple:
  """('model', 'layers', 'mlp', ...) -> ('model', 'layers', index, 'mlp', ...)."""
  parts = tuple(path)
  names = [str(p) for p in parts]
  if LAYERS_AXIS not in names:
    raise ValueError(f"{'.'.join(names)}: a stacked parameter outside a 'layers' module")
  at = names.index(LAYERS_AXIS) + 1
  return parts[:at] + (index,) + parts[at:]


def layer_paths(path: Sequence[Any], metadata, shape: Sequence[int]) -> list[tuple[tuple,
                                                                                  int | None]]:
  """`[(per-layer path, layer index)]` a parameter stands for.

  One `(path, None)` for an ordinary parameter; `(layer_path(path, i), i)`
  for each layer i of a stacked one.
  """
  if not is_stacked(metadata):
    return [(tuple(path), None)]
  return [(layer_path(path, i), i) for i in range(shape[0])]


def hf_name(path: Sequence[Any]) -> str:
  """('model', 'layers', 0, 'self_attn', 'q_proj', 'kernel') -> 'model.layers.0.self_attn.q_proj.weight'."""
  parts = [str(p) for p in path]
  if parts[-1] == "kernel":
    parts[-1] = "weight"
  return ".".join(parts)


def _is_bias(path: Sequence[Any]) -> bool:
  return str(path[-1]) == "bias"


def hf_shape(path: Sequence[Any], shape: Sequence[int], in_ndim: int | None) -> tuple[int, ...]:
  """The Hugging Face shape of one of our parameters."""
  if in_ndim is not None:
    return (int(np.prod(shape[in_ndim:])), int(np.prod(shape[:in_ndim])))
  if _is_bias(path):
    return (int(np.prod(shape)),)
  return tuple(shape)


def from_hf(tensor: np.ndarray, shape: Sequence[int], in_ndim: int | None) -> np.ndarray:
  """A Hugging Face tensor in our layout."""
  if in_ndim is not None:
    tensor = tensor.T
  return np.ascontiguousarray(tensor).reshape(shape)


def to_hf(path: Sequence[Any], array: np.ndarray, in_ndim: int | None) -> np.ndarray:
  """One of our arrays in the Hugging Face layout."""
  target = hf_shape(path, array.shape, in_ndim)
  if in_ndim is not None:
    array = array.reshape(target[::-1]).T
  return np.ascontiguousarray(array).reshape(target)
