"""Parameter paths <-> Hugging Face tensor names and layouts.

Module and parameter names follow transformers (`model.layers.0.self_attn.
q_proj`), so a tensor name is the parameter path joined by dots. Two layouts
differ: transformers stores a Linear weight as `[out, in]` where we store
`in_shape + out_shape` (q_proj as `[embed, heads, head_dim]`, recorded by the
kernel's `in_ndim` metadata), and a bias of a multi-dimensional output is flat
there.
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
