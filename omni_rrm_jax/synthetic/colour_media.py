"""Seeded synthetic image and video preference pairs, written as real media files.

"What colour is the square?" over a PNG of one coloured square on a light
background, and "What colour is the moving square?" over a short MP4 of a
square crossing the frame. The colour is visible only in the media, so a
model can only prefer the right answer by looking. As in `synthetic.py`, each
pair has the correct and a wrong answer in random A/B order, teacher scores and
a rationale in the strict judgment format, so the same records train the
scalar RM and the judge.

Images come in a few sizes (so batches mix patch grids); all sides are
multiples of 28, the Qwen2-VL resize factor, so the processor keeps them as
drawn. Files go under `media_root` and records name them relative to it.

The richer omni tasks (shapes, counts, positions, motion) are in
`vision.py`; this module keeps the original colour pairs.
"""

from __future__ import annotations

import os
import random
from typing import Iterable

import av
import numpy as np
from PIL import Image

from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.synthetic.shapes import BACKGROUNDS, COLOURS
from omni_rrm_jax.rewards.judgment import render_judgment

IMAGE_SIZES = ((56, 56), (56, 84), (84, 56), (84, 84), (112, 84), (84, 112), (112, 112))
VIDEO_SIZE = (56, 56)
VIDEO_FRAMES = 4
VIDEO_FPS = 2
_PROMPTS = {"image": ("What colour is the square?", "Which colour is the square in the picture?"),
            "video": ("What colour is the moving square?",
                      "Which colour is the square in the video?")}
_ANSWERS = ("The square is {c}.", "It is {c}.", "{C}.")


def _square(height: int, width: int, colour, background, top: int, left: int,
            side: int) -> np.ndarray:
  frame = np.empty((height, width, 3), np.uint8)
  frame[:] = background
  frame[top:top + side, left:left + side] = colour
  return frame


def write_square_png(path: str, colour, background, height: int, width: int,
                     rng: random.Random) -> None:
  """A PNG of one square (3/4 of the shorter side or more) at a random place."""
  side = rng.randint(min(height, width) * 3 // 4, min(height, width))
  top, left = rng.randint(0, height - side), rng.randint(0, width - side)
  Image.fromarray(_square(height, width, colour, background, top, left, side)).save(path)


def write_square_mp4(path: str, colour, background, height: int = VIDEO_SIZE[0],
                     width: int = VIDEO_SIZE[1], num_frames: int = VIDEO_FRAMES,
                     fps: int = VIDEO_FPS) -> None:
  """An MP4 (MPEG-4 part 2, available in every FFmpeg build) of a square moving right."""
  side = min(height, width) * 3 // 4
  with av.open(path, "w") as container:
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for i in range(num_frames):
      left = (width - side) * i // max(1, num_frames - 1)
      frame = _square(height, width, colour, background, (height - side) // 2, left, side)
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def _rationale(better: str, worse: str, noun: str, good: str, bad: str, score_better: int,
               score_worse: int) -> str:
  reasoning = {
      "fluency_coherence": f"Both {better} and {worse} are short, fluent answers.",
      "relevance": f"{better} and {worse} both name a colour for the square in the {noun}.",
      "accuracy_completeness": (f"The square in the {noun} is {good}: {better} says so, "
                                f"{worse} says {bad}, which is wrong."),
      "reasoning_quality": f"{better} matches what the {noun} shows, {worse} does not.",
      "safety_ethics": f"Neither {better} nor {worse} raises any safety concern.",
  }
  scores = {better: score_better, worse: score_worse}
  return render_judgment(scores["A"], scores["B"], reasoning)


def generate_media_pairs(n: int, seed: int, media_root: str,
                         kinds: Iterable[str] = ("image", "video"),
                         prefix: str = "media") -> list[PreferenceRecord]:
  """`n` image / video preference records, their files written under `media_root`.

  Args:
    n: number of records; kinds alternate.
    seed: everything (colours, sizes, placement, answers, A/B order, scores)
      follows it.
    media_root: the folder for `images/` and `videos/`; created if needed.
    kinds: "image" and / or "video".
    prefix: id and file-name prefix, so train and eval sets do not collide.
  """
  kinds = list(kinds)
  unknown = [k for k in kinds if k not in _PROMPTS]
  if unknown:
    raise ValueError(f"unknown synthetic media kinds {unknown}; known: {sorted(_PROMPTS)}")
  for folder in ("images", "videos"):
    os.makedirs(os.path.join(media_root, folder), exist_ok=True)
  rng = random.Random(seed)
  names = sorted(COLOURS)
  records = []
  for i in range(n):
    kind = kinds[i % len(kinds)]
    right = rng.choice(names)
    wrong = rng.choice([c for c in names if c != right])
    background = rng.choice(BACKGROUNDS)
    if kind == "image":
      rel = f"images/{prefix}-{seed}-{i}.png"
      height, width = rng.choice(IMAGE_SIZES)
      write_square_png(os.path.join(media_root, rel), COLOURS[right], background, height,
                       width, rng)
      media = {"images": [rel], "video": None, "audio": None}
    else:
      rel = f"videos/{prefix}-{seed}-{i}.mp4"
      write_square_mp4(os.path.join(media_root, rel), COLOURS[right], background)
      media = {"images": [], "video": rel, "audio": None}
    template = rng.choice(_ANSWERS)
    fill = lambda c: template.format(c=c, C=c.capitalize())  # noqa: E731
    good_first = rng.random() < 0.5
    better, worse = ("A", "B") if good_first else ("B", "A")
    score_good, score_bad = rng.randint(7, 10), rng.randint(1, 4)
    records.append(PreferenceRecord(
        id=f"{prefix}-{seed}-{i}", prompt=rng.choice(_PROMPTS[kind]),
        response_a=fill(right) if good_first else fill(wrong),
        response_b=fill(wrong) if good_first else fill(right),
        label=better, modality=kind, media=media, scores={better: score_good, worse: score_bad},
        rationale=_rationale(better, worse, kind, right, wrong, score_good, score_bad),
        subset=f"{kind}-colour"))
  return records
