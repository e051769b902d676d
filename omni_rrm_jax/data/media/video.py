"""Video files -> Qwen2-VL vision patches, decoded with PyAV.

Frame sampling follows transformers' Qwen2-VL video processor with `fps` set
(`Qwen2VLVideoProcessor.sample_frames`):

  budget  = floor(min(max_frames, total) / T) * T          (T: temporal patch)
  n       = total / video_fps * fps, clamped to [min_frames, budget] and to
            total, then floored to a multiple of T
  indices = int(float32(i * total / n)) for i in 0 .. ceil(total / (total / n)) - 1,
            keeping those < total

which is `torch.arange(0, total, total / n).int()` reproduced exactly. Its
float rounding sometimes yields an (n + 1)-th index equal to `total`, past the
last frame; transformers' PyAV reader never reaches that frame and silently
returns n frames, and so do we (should an extra index ever fall inside the
video, the patcher pads with the last frame, as transformers' does).
(qwen-omni-utils samples differently: `linspace(0, total - 1, n).round()` with
n rounded to the nearest multiple of T.)

Each sampled frame is converted to RGB by PyAV (`rgb24`, as transformers'
PyAV reader does), resized with the same smart resize and PIL filter as images
(video pixel range) and normalised like an image, so each frame's patches
equal transformers' PIL image processor run on that frame. transformers' own
video processor resizes uint8 tensors with torchvision's antialiased bicubic
instead, which may differ from PIL's by rounding in some pixels; it needs
torchvision, which this project does not install, so that difference is not
measured here.

`second_per_grid_ts` is T / sampled fps, with sampled fps = (frames used /
frames considered) * video fps, as transformers' Qwen2.5-VL processor and
qwen-omni-utils compute it (transformers also counts a dropped past-the-end
index; we count only frames used). The Qwen2.5-Omni processor instead uses
T / requested fps; the two agree, up to the flooring of n, when neither
min_frames nor max_frames clamped n.

Memory: frames are decoded one at a time in stream order; only sampled frames
are kept, already resized (uint8), and decoding stops after the last one. With
`max_video_seconds`, frames after that point are neither sampled nor decoded.
"""

from __future__ import annotations

import dataclasses
import math
import os

import av
import numpy as np

from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media.errors import (check_file, check_finite, decode_error,
                                            display_name)
from omni_rrm_jax.data.media.image import normalize, patchify, smart_resize
from omni_rrm_jax.data.records import BadRecord


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What the container says about its first video stream.

  Attributes:
    total_frames: frames in the stream.
    fps: average frame rate.
    height: coded frame height.
    width: coded frame width.
  """
  total_frames: int
  fps: float
  height: int
  width: int


def sample_frame_indices(total_frames: int, video_fps: float, cfg: MediaConfig) -> np.ndarray:
  """Indices of the frames transformers' Qwen2-VL processor samples at `cfg.video_fps`.

  Args:
    total_frames: frames available.
    video_fps: the video's frame rate.
    cfg: supplies fps, min / max frames and the temporal patch size.

  Returns:
    int64 [n] increasing frame indices.

  Raises:
    ValueError: fewer frames than one temporal patch.
  """
  tp = cfg.temporal_patch_size
  budget = math.floor(min(cfg.video_max_frames, total_frames) / tp) * tp
  wanted = total_frames / video_fps * cfg.video_fps
  wanted = min(max(wanted, cfg.video_min_frames), budget, total_frames)
  num_frames = math.floor(wanted / tp) * tp
  if num_frames <= 0:
    raise ValueError(f"{total_frames} frame(s) is fewer than temporal_patch_size {tp}")
  step = total_frames / num_frames
  # torch.arange sizes its output with a float64 ceil and computes i * step in
  # float64 before storing float32; .int() then truncates.
  count = math.ceil(total_frames / step)
  indices = (np.arange(count, dtype=np.float64) * step).astype(np.float32).astype(np.int64)
  return indices[indices < total_frames]


def frame_pixel_range(num_frames: int, cfg: MediaConfig) -> tuple[int, int]:
  """(min_pixels, max_pixels) for each frame of a video of `num_frames` frames."""
  max_pixels = cfg.video_max_pixels
  if cfg.video_cap_pixels_per_frame:
    # An even share of the whole video's budget, never below ~min_pixels.
    total_pixels = int(cfg.video_max_tokens * cfg.factor * cfg.factor * 0.9)
    max_pixels = max(min(max_pixels, total_pixels * cfg.temporal_patch_size // num_frames),
                     int(cfg.video_min_pixels * 1.05))
  return cfg.video_min_pixels, max_pixels


def probe_video(container: av.container.InputContainer, path: str) -> VideoInfo:
  """Frame count, rate and size of the first video stream."""
  if not container.streams.video:
    raise ValueError("no video stream")
  stream = container.streams.video[0]
  rate = stream.average_rate or stream.guessed_rate
  if not rate:
    raise ValueError("unknown frame rate")
  total = stream.frames
  if not total:
    # Some containers (e.g. WebM) do not store a count: demux once to count
    # packets, which costs no decoding.
    with av.open(path) as counter:
      total = sum(1 for packet in counter.demux(counter.streams.video[0]) if packet.size)
    # Such a container still states its duration up front; a file cut short
    # (an interrupted download) holds fewer frames than it says, and would
    # otherwise pass as a shorter video.
    if container.duration:
      stated = container.duration / av.time_base * float(rate)
      if total < 0.9 * stated - 1:
        raise ValueError(f"truncated: {total} frames where the container states "
                         f"{container.duration / av.time_base:.2f} s (~{stated:.0f} frames)")
  return VideoInfo(total_frames=int(total), fps=float(rate), height=stream.height,
                   width=stream.width)


def process_video(path: str | os.PathLike[str], cfg: MediaConfig, *,
                  name: str | None = None) -> dict[str, np.ndarray]:
  """A video file -> the video inputs of a Qwen2.5-VL / Omni model.

  Args:
    path: the video file (any container PyAV reads; its first video stream).
    cfg: sampling, resize settings and limits.
    name: how errors refer to the file (default: `path`).

  Returns:
    {"pixel_values_videos": float32 [grid_t * grid_h * grid_w, 3 * T * patch**2],
     "video_grid_thw": int64 [1, 3],
     "second_per_grid_ts": float32 [1]}.

  Raises:
    BadRecord: missing, empty, corrupt or truncated file, too few frames, or
      pixel values that are not finite.
  """
  name = display_name(path, name)
  path = check_file(path, "video", name)
  try:
    with av.open(str(path)) as container:
      info = probe_video(container, str(path))
      total = info.total_frames
      if cfg.max_video_seconds is not None:
        total = min(total, max(1, int(cfg.max_video_seconds * info.fps)))
      try:
        indices = sample_frame_indices(total, info.fps, cfg)
      except ValueError as e:
        raise BadRecord("unusable video", f"{name}: {e}") from None
      frames_thwc = _decode_sampled(container, indices, cfg, name)
  except BadRecord:
    raise
  except Exception as e:  # PyAV raises many types on damaged files; all mean "skip it".
    raise decode_error("video", path, name, e) from None
  frames_tchw = normalize(frames_thwc, cfg).transpose(0, 3, 1, 2)
  patches, grid = patchify(frames_tchw, cfg)
  check_finite(patches, "video", name)
  sampled_fps = len(indices) / total * info.fps
  return {"pixel_values_videos": patches,
          "video_grid_thw": np.asarray([grid], dtype=np.int64),
          "second_per_grid_ts": np.asarray([cfg.temporal_patch_size / sampled_fps], np.float32)}


def _decode_sampled(container: av.container.InputContainer, indices: np.ndarray,
                    cfg: MediaConfig, name: str) -> np.ndarray:
  """Decodes in order, keeping the sampled frames resized: uint8 [n, H, W, 3]."""
  wanted = {int(i) for i in indices}
  last = int(indices[-1])
  min_pixels, max_pixels = frame_pixel_range(len(indices), cfg)
  kept: dict[int, np.ndarray] = {}
  target_hw = None
  stream = container.streams.video[0]
  stream.thread_type = "AUTO"  # decoding threads; frames still come out in order
  decoded = 0
  for index, frame in enumerate(container.decode(stream)):
    decoded = index + 1
    if index in wanted:
      image = frame.to_image()  # rgb24, as transformers' PyAV reader converts
      if target_hw is None:
        try:
          target_hw = smart_resize(image.height, image.width, cfg.factor, min_pixels, max_pixels)
        except ValueError as e:
          raise BadRecord("unusable video", f"{name}: {e}") from None
      height, width = target_hw
      if image.size != (width, height):
        image = image.resize((width, height), resample=cfg.resample)
      kept[index] = np.asarray(image, dtype=np.uint8)
    if index >= last:
      break
  if last not in kept:
    raise BadRecord("unreadable video",
                    f"{name}: stream ended after {decoded} of {last + 1} needed frames")
  return np.stack([kept[int(i)] for i in indices])
