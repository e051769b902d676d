"""Multimodal rotary positions (M-RoPE) of the Qwen2.5-VL / Qwen2.5-Omni text decoder.

Every token gets three position ids: temporal, height and width. Text tokens
use the same id on all three axes and count up by one; the tokens of an image
or video take (t, h, w) ids on its merged patch grid, offset by the position
where it starts. The rotary frequencies are then split into three sections
(`mrope_section`), each rotated by one of the three ids.

`get_rope_index` needs the token ids and grid sizes as concrete values, so it
runs on the host (numpy), before `jit`; `mrope_cos_sin` is the jittable part.
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from omni_rrm_jax.models.rotary import static_inv_freq

TEXT, IMAGE, VIDEO = 0, 1, 2


def token_types(input_ids_bt: np.ndarray, image_token_id: int, video_token_id: int) -> np.ndarray:
  """Modality of every token: 0 text, 1 image placeholder, 2 video placeholder.

  This is what transformers' processors return as `mm_token_type_ids`.
  """
  ids = np.asarray(input_ids_bt)
  types = np.zeros(ids.shape, np.int32)
  types[ids == image_token_id] = IMAGE
  types[ids == video_token_id] = VIDEO
  return types


def media_positions(start: int, grid_thw: Sequence[int], spatial_merge_size: int,
                    time_interval: float | np.floating = 1) -> np.ndarray:
  """Position ids [3, t * h * w / merge²] of one image or video starting at `start`.

  Temporal ids are `floor(frame * time_interval)`, computed in float32 as
  transformers does (a video's interval is `tokens_per_second *
  second_per_grid_ts`), so frames of a video sampled slowly are spread out.
  """
  t = int(grid_thw[0])
  h = int(grid_thw[1]) // spatial_merge_size
  w = int(grid_thw[2]) // spatial_merge_size
  t_ids = (np.arange(t, dtype=np.float32) * np.float32(time_interval)).astype(np.int64)
  t_thw, h_thw, w_thw = np.meshgrid(t_ids, np.arange(h), np.arange(w), indexing="ij")
  return np.stack([t_thw, h_thw, w_thw]).reshape(3, -1) + start


def get_rope_index(input_ids: np.ndarray, attention_mask: np.ndarray | None = None, *,
                   image_grid_thw: np.ndarray | None = None,
                   video_grid_thw: np.ndarray | None = None,
                   second_per_grid_ts: np.ndarray | None = None,
                   mm_token_type_ids: np.ndarray | None = None,
                   image_token_id: int, video_token_id: int, spatial_merge_size: int,
                   tokens_per_second: float) -> tuple[np.ndarray, np.ndarray]:
  """M-RoPE position ids of a batch, as transformers 5.x's `get_rope_index`.

  Each row's real tokens (attention_mask == 1) are split into runs of one
  modality. A text run counts on from the current position; an image or video
  run takes the next grid of its kind (grids are consumed in batch order, row
  by row) and advances the position by `max(h, w) / merge`, whatever its
  temporal extent. Padding gets position 0.

  Args:
    input_ids: int [B, T].
    attention_mask: [B, T], 1 for real tokens; all real when None.
    image_grid_thw: int [num_images, 3] patch grids (t, h, w), in order.
    video_grid_thw: int [num_videos, 3].
    second_per_grid_ts: [num_videos] seconds per temporal patch (1 when None).
    mm_token_type_ids: [B, T] modality per token; derived from the
      placeholder ids when None.
    image_token_id: the image placeholder id.
    video_token_id: the video placeholder id.
    spatial_merge_size: side of the patch block merged into one token.
    tokens_per_second: temporal ids per second of video.

  Returns:
    (position ids int32 [3, B, T], rope deltas int32 [B]: the next text
    position after the row minus its number of real tokens, which continues
    positions during generation).
  """
  ids = np.asarray(input_ids)
  b, t = ids.shape
  valid_bt = np.ones((b, t), bool) if attention_mask is None else np.asarray(attention_mask) > 0
  types_bt = (token_types(ids, image_token_id, video_token_id) if mm_token_type_ids is None
              else np.asarray(mm_token_type_ids))
  grids = {IMAGE: iter(np.asarray(image_grid_thw).reshape(-1, 3)
                       if image_grid_thw is not None else ()),
           VIDEO: iter(np.asarray(video_grid_thw).reshape(-1, 3)
                       if video_grid_thw is not None else ())}
  seconds = iter(np.asarray(second_per_grid_ts, np.float32).reshape(-1)
                 if second_per_grid_ts is not None else itertools.repeat(np.float32(1)))
  position_3bt = np.zeros((3, b, t), np.int64)
  deltas_b = np.zeros((b,), np.int64)
  for row in range(b):
    types = types_bt[row][valid_bt[row]]
    pieces, pos = [], 0
    for kind, run in itertools.groupby(types.tolist()):
      n = len(list(run))
      if kind == TEXT:
        pieces.append(np.broadcast_to(np.arange(n) + pos, (3, n)))
        pos += n
        continue
      try:
        grid = next(grids[kind])
      except StopIteration:
        name = "image_grid_thw" if kind == IMAGE else "video_grid_thw"
        raise ValueError(f"row {row} has more media runs than {name} has grids") from None
      interval = np.float32(tokens_per_second) * next(seconds) if kind == VIDEO else 1
      piece = media_positions(pos, grid, spatial_merge_size, interval)
      if piece.shape[1] != n:
        raise ValueError(f"row {row}: a run of {n} placeholder tokens does not match grid "
                         f"{tuple(int(g) for g in grid)} ({piece.shape[1]} merged patches)")
      pieces.append(piece)
      pos += max(int(grid[1]), int(grid[2])) // spatial_merge_size
    if pieces:
      row_3n = np.concatenate(pieces, axis=1)
      position_3bt[:, row, valid_bt[row]] = row_3n
      deltas_b[row] = row_3n.max() + 1 - row_3n.shape[1]
  return position_3bt.astype(np.int32), deltas_b.astype(np.int32)


def mrope_frequency_axes(mrope_section: Sequence[int]) -> np.ndarray:
  """Which position axis (0 t, 1 h, 2 w) rotates each of the head_dim / 2 frequencies."""
  return np.concatenate([np.full(n, i % 3, np.int32) for i, n in enumerate(mrope_section)])


def mrope_cos_sin(position_ids_3bt: jax.Array, rope: Mapping, head_dim: int,
                  max_position_embeddings: int) -> tuple[jax.Array, jax.Array]:
  """cos and sin tables [B, T, head_dim] (float32) for three-axis positions.

  Args:
    position_ids_3bt: int [3, B, T] temporal / height / width ids.
    rope: the text `rope_parameters`, with `mrope_section` (frequencies per
      axis, summing to head_dim / 2).
    head_dim: rotary size per head.
    max_position_embeddings: for the scaled RoPE types that need it.
  """
  if rope.get("rope_type", "default") == "dynamic":
    raise ValueError("dynamic RoPE scaling is not supported with multimodal positions")
  section = tuple(rope["mrope_section"])
  if sum(section) != head_dim // 2:
    raise ValueError(f"mrope_section {section} must sum to head_dim / 2 = {head_dim // 2}")
  inv_freq_f, scale = static_inv_freq(rope, head_dim, max_position_embeddings)
  # Gathering each frequency's own axis first gives the same angles as
  # computing all three tables and splicing their sections.
  axis_f = mrope_frequency_axes(section)
  position_btf = jnp.moveaxis(jnp.take(position_ids_3bt, axis_f, axis=0), 0, -1)
  freqs_btf = position_btf.astype(jnp.float32) * jnp.asarray(inv_freq_f)
  emb_btd = jnp.concatenate([freqs_btf, freqs_btf], axis=-1)
  return jnp.cos(emb_btd) * scale, jnp.sin(emb_btd) * scale
