"""Host-side (numpy) bookkeeping for the Qwen2.5-Omni audio encoder.

The encoder cuts every clip's log-mel frames into windows of `2 * n_window`
frames (the last one of a clip may be shorter), runs the convolutions and
attention inside each window only, then average-pools pairs of tokens within
each clip. Which frame goes to which window and which tokens are pooled
together depends only on the clips' frame counts, so it is computed here, on
the host, before `jit`: the number of windows C and of output tokens P fix the
traced shapes; the index arrays themselves are ordinary (traced) inputs.

Shapes: A clips, C windows, W = 2 * n_window frames per window, N = n_window
tokens per window after the stride-2 convolution, P output tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.struct
import numpy as np


def feat_extract_output_lengths(input_lengths):
  """Token counts after the convolutions and after pooling, per clip.

  The stride-2 convolution (kernel 3, padding 1) keeps ceil(L / 2) frames; the
  pooling (kernel 2, stride 2, no padding) keeps floor of half of those, so an
  odd last token is dropped. Pure integer arithmetic: works on Python ints,
  numpy arrays and jax arrays alike.

  Args:
    input_lengths: log-mel frame counts (`feature_attention_mask.sum(-1)`).

  Returns:
    (lengths after the convolutions, lengths after pooling). The second is the
    number of `<|AUDIO|>` placeholder tokens each clip fills.
  """
  after_cnn = (input_lengths - 1) // 2 + 1
  return after_cnn, (after_cnn - 2) // 2 + 1


class WindowTable(NamedTuple):
  """One row per window, clips in order and each clip's windows in time order.

  Attributes:
    clip_c: index of the clip the window belongs to.
    start_c: first frame of the window, counted within its clip.
    frames_c: number of real frames in the window (<= 2 * n_window).
  """
  clip_c: np.ndarray
  start_c: np.ndarray
  frames_c: np.ndarray


def window_table(feature_lens, n_window: int) -> WindowTable:
  """Splits clips of `feature_lens` frames into windows of `2 * n_window` frames."""
  lens_a = np.asarray(feature_lens, np.int64).reshape(-1)
  if (lens_a < 1).any():
    raise ValueError(f"every audio clip needs at least one frame, got lengths {lens_a.tolist()}")
  width = 2 * n_window
  count_a = -(-lens_a // width)
  clip_c = np.repeat(np.arange(len(lens_a)), count_a)
  first_window_c = np.repeat(np.cumsum(count_a) - count_a, count_a)
  start_c = (np.arange(int(count_a.sum())) - first_window_c) * width
  frames_c = np.minimum(width, lens_a[clip_c] - start_c)
  return WindowTable(clip_c, start_c, frames_c)


@flax.struct.dataclass
class AudioLayout:
  """Gather indices that place a batch of clips into fixed-size windows.

  A pytree of arrays: pass it through `jit` as an argument. Its array shapes
  (C, P) are the only lengths the compiled function depends on, so batches
  padded to the same `num_windows` / `num_outputs` share one compilation.

  Attributes:
    frame_index_cw: int32 [C, W], for each window slot the row of the frame
      table (the `input_features` frames flattened to [B * T, mel], or the
      columns of a concatenated [mel, L] input) holding it; 0 at padding.
    frame_valid_cw: bool [C, W], True at real frames.
    token_valid_cn: bool [C, N], True at real tokens (the attention keys).
    pool_index_p2: int32 [P, 2], the two tokens (as rows of the flattened
      [C * N] token grid) averaged into each output token.
    output_valid_p: bool [P], False at rows padded up to `num_outputs`.
    feature_lens_a: int32 [A], frames per clip.
    output_lens_a: int32 [A], output tokens per clip (they sum to the number
      of True entries of `output_valid_p`).
  """
  frame_index_cw: np.ndarray
  frame_valid_cw: np.ndarray
  token_valid_cn: np.ndarray
  pool_index_p2: np.ndarray
  output_valid_p: np.ndarray
  feature_lens_a: np.ndarray
  output_lens_a: np.ndarray

  @property
  def num_outputs(self) -> int:
    return self.pool_index_p2.shape[0]


def build_audio_layout(n_window: int, *, feature_attention_mask=None, feature_lens=None,
                       num_windows: int | None = None,
                       num_outputs: int | None = None) -> AudioLayout:
  """The window layout of a batch of clips, computed on the host.

  Give exactly one of:
    feature_attention_mask: [B, T] 0/1, one clip per row, as the processor
      returns it with `input_features` [B, mel, T]. A clip's frames are the
      masked-in positions of its row, in order (as the thinker selects them).
    feature_lens: [A] frame counts of clips concatenated along time, for a
      [mel, sum(feature_lens)] input (the audio tower's own calling form).

  Args:
    n_window: half the window length in frames (`audio_config.n_window`).
    feature_attention_mask: see above.
    feature_lens: see above.
    num_windows: pad the window axis to this size (fully masked windows), so
      that batches of different lengths share one compiled shape.
    num_outputs: pad the output axis to this size; padded rows are marked in
      `output_valid_p` and hold meaningless values.

  Returns:
    The `AudioLayout`.
  """
  if (feature_attention_mask is None) == (feature_lens is None):
    raise ValueError("pass exactly one of feature_attention_mask or feature_lens")
  if feature_attention_mask is not None:
    mask_bt = np.asarray(feature_attention_mask).astype(bool)
    if mask_bt.ndim != 2:
      raise ValueError(f"feature_attention_mask must be [batch, frames], got {mask_bt.shape}")
    lens_a = mask_bt.sum(axis=1)
    # Row-major order: clip by clip, frames in time order within a clip.
    source_f = np.flatnonzero(mask_bt.reshape(-1))
  else:
    lens_a = np.asarray(feature_lens, np.int64).reshape(-1)
    source_f = np.arange(int(lens_a.sum()))
  table = window_table(lens_a, n_window)
  width, tokens = 2 * n_window, n_window
  clip_offset_a = np.cumsum(lens_a) - lens_a

  slot_w = np.arange(width)
  frame_valid_cw = slot_w[None, :] < table.frames_c[:, None]
  frame_in_clip_cw = table.start_c[:, None] + slot_w[None, :]
  rank_cw = np.where(frame_valid_cw, clip_offset_a[table.clip_c][:, None] + frame_in_clip_cw, 0)
  frame_index_cw = np.where(frame_valid_cw, source_f[rank_cw], 0)

  after_cnn_c, _ = feat_extract_output_lengths(table.frames_c)
  token_valid_cn = np.arange(tokens)[None, :] < after_cnn_c[:, None]

  # Every window but a clip's last is full (N tokens), so the clip's s-th
  # token sits in its (s // N)-th window at slot s % N.
  _, output_lens_a = feat_extract_output_lengths(lens_a)
  count_a = np.bincount(table.clip_c, minlength=len(lens_a))
  first_window_a = np.cumsum(count_a) - count_a
  clip_p = np.repeat(np.arange(len(lens_a)), output_lens_a)
  pair_p = np.arange(int(output_lens_a.sum())) - np.repeat(
      np.cumsum(output_lens_a) - output_lens_a, output_lens_a)
  token_p2 = 2 * pair_p[:, None] + np.arange(2)[None, :]
  window_p2 = first_window_a[clip_p][:, None] + token_p2 // tokens
  pool_index_p2 = window_p2 * tokens + token_p2 % tokens

  frame_index_cw, frame_valid_cw, token_valid_cn = _pad_rows(
      num_windows, "num_windows", frame_index_cw, frame_valid_cw, token_valid_cn)
  output_valid_p = np.ones(len(pool_index_p2), bool)
  pool_index_p2, output_valid_p = _pad_rows(num_outputs, "num_outputs", pool_index_p2,
                                            output_valid_p)
  return AudioLayout(
      frame_index_cw=frame_index_cw.astype(np.int32),
      frame_valid_cw=frame_valid_cw,
      token_valid_cn=token_valid_cn,
      pool_index_p2=pool_index_p2.astype(np.int32),
      output_valid_p=output_valid_p,
      feature_lens_a=lens_a.astype(np.int32),
      output_lens_a=np.asarray(output_lens_a).astype(np.int32))


def _pad_rows(size: int | None, name: str, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
  """Zero/False-pads the leading axis of each array to `size`."""
  if size is None:
    return arrays
  rows = arrays[0].shape[0]
  if size < rows:
    raise ValueError(f"{name}={size} is smaller than the {rows} this batch needs")
  return tuple(np.pad(a, [(0, size - rows)] + [(0, 0)] * (a.ndim - 1)) for a in arrays)
