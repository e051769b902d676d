"""Flat-coloured shapes drawn into frames, and the PNG / MP4 writers for them.

Shapes are drawn by PIL without anti-aliasing, so every shape pixel has
exactly its colour in a PNG (tests find objects by colour). MP4s use MPEG-4
part 2 (`mpeg4`, in every FFmpeg build) in yuv420p with a fine quantiser; the
encoder is deterministic, colours come back within a few levels inside a
shape, and only edge pixels blur (chroma is stored at half resolution).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import av
import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("square", "circle", "triangle")
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220),
           "yellow": (240, 210, 30)}
BACKGROUNDS = ((245, 245, 245), (225, 225, 210), (210, 220, 235))


@dataclasses.dataclass(frozen=True)
class Sprite:
  """One shape: its bounding box is `side` pixels from (`top`, `left`)."""

  shape: str
  colour: tuple[int, int, int]
  top: int
  left: int
  side: int

  def __post_init__(self):
    if self.shape not in SHAPES:
      raise ValueError(f"unknown shape {self.shape!r}; known: {', '.join(SHAPES)}")


def draw_frame(height: int, width: int, background: tuple[int, int, int],
               sprites: Sequence[Sprite]) -> np.ndarray:
  """An RGB frame, uint8 [height, width, 3], with `sprites` drawn in order."""
  image = Image.new("RGB", (width, height), tuple(background))
  draw = ImageDraw.Draw(image)
  for s in sprites:
    right, bottom = s.left + s.side - 1, s.top + s.side - 1
    if s.shape == "square":
      draw.rectangle((s.left, s.top, right, bottom), fill=s.colour)
    elif s.shape == "circle":
      draw.ellipse((s.left, s.top, right, bottom), fill=s.colour)
    else:  # a triangle standing on its base
      draw.polygon(((s.left + (s.side - 1) / 2, s.top), (s.left, bottom), (right, bottom)),
                   fill=s.colour)
  return np.asarray(image)


def write_png(path: str, frame_hwc: np.ndarray) -> None:
  """Saves one uint8 RGB frame as a PNG (no timestamps: same frame, same bytes)."""
  Image.fromarray(frame_hwc).save(path, format="PNG")


def write_mp4(path: str, frames_thwc: Sequence[np.ndarray], fps: int) -> None:
  """Encodes uint8 RGB frames (all one size, even sides) as an MPEG-4 part 2 MP4."""
  height, width = frames_thwc[0].shape[:2]
  with av.open(path, "w") as container:
    # A fine quantiser (2 at most): at the default, small shapes lose their corners.
    stream = container.add_stream("mpeg4", rate=fps, options={"qmin": "1", "qmax": "2"})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for frame in frames_thwc:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
