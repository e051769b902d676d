"""Host-side (numpy) layout of the Qwen2.5-VL vision encoder's patches.

Which patches share a window or a frame, the window order and the rotary
(row, col) of each patch depend only on the grid sizes, so they are computed
here, before `jit`. The arrays' shapes depend only on the number of patches N,
so a layout built outside `jit` can also be passed in traced
(`VisionTransformer.encode`) without a recompile per set of grid sizes.

Patches come in the processor's order: item by item, frame by frame, and
within a frame in blocks of `merge x merge` neighbours (a merged token).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import numpy as np


def as_grids(grid_thw) -> np.ndarray:
  """Grids [num_items, 3] as host integers, or a clear error for traced values."""
  if isinstance(grid_thw, jax.core.Tracer):
    raise TypeError("grid_thw is host metadata: pass it as numpy / Python values (close over "
                    "it or mark it static under jit), or pass a prebuilt VisionLayout")
  grids = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
  if (grids <= 0).any():
    raise ValueError(f"grid sizes must be positive, got {grids.tolist()}")
  return grids


def window_index(grid_thw, spatial_merge_size: int, window_size: int,
                 patch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """The window order of merged tokens, as transformers' `get_window_index`.

  Each frame's merged grid is cut into square windows of
  `window_size / merge / patch` merged tokens a side (edge windows smaller);
  windows are taken row by row, tokens within a window row by row.

  Returns:
    (window_index_m: int32, position k holds the original index of the
    merged token placed k-th; window_id_m: int32, the window of the token
    placed k-th, non-decreasing, unique over all items and frames).
  """
  side = window_size // spatial_merge_size // patch_size
  order, windows, token0, window0 = [], [], 0, 0
  for t, h, w in as_grids(grid_thw):
    lh, lw = h // spatial_merge_size, w // spatial_merge_size
    t_i, h_i, w_i = np.indices((t, lh, lw)).reshape(3, -1)
    nwin_w = -(-lw // side)
    window = (t_i * -(-lh // side) + h_i // side) * nwin_w + w_i // side
    # Within a window, row-major; the stable sort keeps that order.
    perm = np.argsort(window, kind="stable")
    order.append(perm + token0)
    # Renumber to consecutive ids, as empty padded windows leave gaps.
    windows.append(np.unique(window[perm], return_inverse=True)[1] + window0)
    token0 += t * lh * lw
    window0 = windows[-1][-1] + 1
  return (np.concatenate(order).astype(np.int32), np.concatenate(windows).astype(np.int32))


def patch_positions(grid_thw, spatial_merge_size: int) -> np.ndarray:
  """(row, col) of every patch [N, 2] in the processor's merge-block order."""
  out = []
  m = spatial_merge_size
  for t, h, w in as_grids(grid_thw):
    rows, cols = np.indices((h, w))
    block = lambda a: a.reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3).reshape(-1)
    out.append(np.tile(np.stack([block(rows), block(cols)], axis=-1), (t, 1)))
  return np.concatenate(out).astype(np.int32)


@flax.struct.dataclass
class VisionLayout:
  """Index arrays that place N patches into windows and frames.

  Attributes:
    perm_n: patch order for windowed attention (window-major).
    position_n2: (row, col) of each patch, in window order.
    frame_n: item-and-frame id of each patch, in window order.
    window_n: window id of each patch, in window order.
    unperm_m: inverse of the merged-token window order.
  """
  perm_n: Any
  position_n2: Any
  frame_n: Any
  window_n: Any
  unperm_m: Any

  @property
  def num_patches(self) -> int:
    return self.perm_n.shape[0]


def vision_layout(grid_thw, spatial_merge_size: int, window_size: int,
                  patch_size: int) -> VisionLayout:
  """The `VisionLayout` (numpy) of a set of image / video grids."""
  grids = as_grids(grid_thw)
  unit = spatial_merge_size ** 2
  if (grids[:, 1:] % spatial_merge_size).any():
    raise ValueError(f"grid h, w must be multiples of spatial_merge_size="
                     f"{spatial_merge_size}, got {grids.tolist()}")
  order_m, window_m = window_index(grids, spatial_merge_size, window_size, patch_size)
  frame_sizes = np.repeat(grids[:, 1] * grids[:, 2] // unit, grids[:, 0])
  frame_m = np.repeat(np.arange(len(frame_sizes)), frame_sizes)[order_m]
  perm_n = (order_m[:, None] * unit + np.arange(unit)).reshape(-1)
  position_n2 = patch_positions(grids, spatial_merge_size)[perm_n]
  return VisionLayout(
      perm_n=perm_n.astype(np.int32), position_n2=position_n2,
      frame_n=np.repeat(frame_m, unit).astype(np.int32),
      window_n=np.repeat(window_m, unit).astype(np.int32),
      unperm_m=np.argsort(order_m).astype(np.int32))
