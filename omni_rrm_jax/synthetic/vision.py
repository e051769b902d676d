"""Image and video omni tasks: shapes, colours, counts, positions, motion, appearance.

Images are PNGs of flat shapes (square, circle, triangle) in one of four
colours on a light background, in sizes whose sides are multiples of 28
between 56 and 112 (the Qwen2-VL resize factor, so they are encoded as drawn
and a tiny vision encoder sees at most 8 x 8 patches). Videos are 56 x 56 MP4s
of 4 frames at 2 fps. Each task asks about one property, with a small answer
set, that only the pixels reveal:

  image-shape     which shape                       square / circle / triangle
  image-colour    which colour                      red / green / blue / yellow
  image-count     how many shapes (1-4, one per     one / two / three / four
                  28-pixel grid cell, never touching)
  image-position  where the shape is: its centre    left / right / top / bottom
                  in the outer third on that side,
                  within a tenth of the middle on the other axis
  video-motion    which way a shape crosses the     left / right / up / down
                  frame
  video-appear    what appears half way through     "a red circle", ... (12)
                  (the first frames are empty)

Two easier colour tasks, for the tiny configs' quick runs and the tests
(`EASY_TASKS`, not part of the main job's mix): one large square filling 3/4
or more of the image (`image-square`) or crossing the frame left to right
(`video-square`), "What colour is the square?".

The wrong answer is another value of the same set: for counts one more or one
fewer (each of the two equally often the right one, `question.count_pair`),
for an appearing shape the same shape in another colour or the same colour as
another shape.
"""

from __future__ import annotations

import functools
import random

from omni_rrm_jax.synthetic.question import Question, Task, answer_pair, count_pair
from omni_rrm_jax.synthetic.shapes import (BACKGROUNDS, COLOURS, SHAPES, Sprite, draw_frame,
                                                write_mp4, write_png)

# Image sides are multiples of 28, the Qwen2-VL resize factor, so the processor
# keeps them as drawn; a few sizes, so batches mix patch grids.
IMAGE_SIZES = ((56, 56), (56, 84), (84, 56), (84, 84), (112, 84), (84, 112), (112, 112))
VIDEO_SIZE = (56, 56)
VIDEO_FRAMES = 4
VIDEO_FPS = 2
COUNT_WORDS = ("one", "two", "three", "four")
POSITIONS = ("left", "right", "top", "bottom")
DIRECTIONS = ("left", "right", "up", "down")
CELL = 28  # count tasks put at most one shape in each CELL x CELL square

_COLOUR_NAMES = tuple(sorted(COLOURS))


def _other(rng: random.Random, values, right):
  return rng.choice([v for v in values if v != right])


def _write_image(height: int, width: int, background, sprites, path: str) -> None:
  write_png(path, draw_frame(height, width, background, sprites))


def _write_video(height: int, width: int, background, sprites_per_frame, path: str) -> None:
  write_mp4(path, [draw_frame(height, width, background, s) for s in sprites_per_frame],
            VIDEO_FPS)


def _image(rng: random.Random, subset: str, prompts, answers, good: str, bad: str, fact: str,
           height: int, width: int, background, sprites) -> Question:
  good_text, bad_text = answer_pair(rng, answers, good, bad)
  return Question("image", subset, rng.choice(prompts), good_text, bad_text, good, bad, fact,
                  functools.partial(_write_image, height, width, background, tuple(sprites)),
                  ".png")


def _canvas(rng: random.Random) -> tuple[int, int, tuple[int, int, int]]:
  height, width = rng.choice(IMAGE_SIZES)
  return height, width, rng.choice(BACKGROUNDS)


def _anywhere(rng: random.Random, height: int, width: int, shape: str, colour: str) -> Sprite:
  side = rng.randint(min(height, width) // 3, min(height, width) // 2)
  return Sprite(shape, COLOURS[colour], rng.randint(0, height - side),
                rng.randint(0, width - side), side)


def image_shape(rng: random.Random) -> Question:
  height, width, background = _canvas(rng)
  shape, colour = rng.choice(SHAPES), rng.choice(_COLOUR_NAMES)
  sprite = _anywhere(rng, height, width, shape, colour)
  return _image(rng, "image-shape", ("What shape is in the image?", "Which shape do you see?"),
                ("It is a {v}.", "A {v}.", "The shape is a {v}."), shape,
                _other(rng, SHAPES, shape), "the image shows a {v}", height, width, background,
                [sprite])


def image_colour(rng: random.Random) -> Question:
  height, width, background = _canvas(rng)
  shape, colour = rng.choice(SHAPES), rng.choice(_COLOUR_NAMES)
  sprite = _anywhere(rng, height, width, shape, colour)
  return _image(rng, "image-colour",
                ("What colour is the shape?", "Which colour is the object in the image?"),
                ("It is {v}.", "{V}.", "The shape is {v}."), colour,
                _other(rng, _COLOUR_NAMES, colour), "the shape is {v}", height, width,
                background, [sprite])


def image_count(rng: random.Random) -> Question:
  height, width, background = _canvas(rng)
  shape, colour = rng.choice(SHAPES), rng.choice(_COLOUR_NAMES)
  count, wrong = count_pair(rng, len(COUNT_WORDS))
  cells = [(r, c) for r in range(height // CELL) for c in range(width // CELL)]
  sprites = []
  for row, col in rng.sample(cells, count):
    # A 2-pixel margin inside each cell keeps neighbours at least 4 pixels apart.
    side = rng.randint(12, 20)
    sprites.append(Sprite(shape, COLOURS[colour], row * CELL + rng.randint(2, CELL - 2 - side),
                          col * CELL + rng.randint(2, CELL - 2 - side), side))
  return _image(rng, "image-count",
                ("How many shapes are in the image?", "Count the shapes in the picture."),
                ("I count {v}.", "{V}.", "The count is {v}."), COUNT_WORDS[count - 1],
                COUNT_WORDS[wrong - 1], "the count is {v}", height, width, background, sprites)


def _placed(rng: random.Random, height: int, width: int, position: str, shape: str,
            colour: str) -> Sprite:
  """A shape whose centre is in the outer third on `position`'s side and near the
  middle on the other axis."""
  side = rng.randint(min(height, width) // 5, min(height, width) // 4)
  along, across = (width, height) if position in ("left", "right") else (height, width)
  middle = (across - side) // 2 + rng.randint(-(across // 10), across // 10)
  edge = rng.randint(1, along // 3 - side)
  near = edge if position in ("left", "top") else along - side - edge
  if position in ("left", "right"):
    return Sprite(shape, COLOURS[colour], middle, near, side)
  return Sprite(shape, COLOURS[colour], near, middle, side)


def image_position(rng: random.Random) -> Question:
  height, width, background = _canvas(rng)
  shape, colour = rng.choice(SHAPES), rng.choice(_COLOUR_NAMES)
  position = rng.choice(POSITIONS)
  sprite = _placed(rng, height, width, position, shape, colour)
  return _image(rng, "image-position", ("Where is the shape?", "Where in the image is the object?"),
                ("It is at the {v}.", "At the {v}.", "The shape is at the {v}."), position,
                _other(rng, POSITIONS, position), "the shape is at the {v}", height, width,
                background, [sprite])


def _video(rng: random.Random, subset: str, prompts, answers, good: str, bad: str, fact: str,
           background, frames) -> Question:
  good_text, bad_text = answer_pair(rng, answers, good, bad)
  height, width = VIDEO_SIZE
  return Question("video", subset, rng.choice(prompts), good_text, bad_text, good, bad, fact,
                  functools.partial(_write_video, height, width, background,
                                    tuple(tuple(f) for f in frames)), ".mp4")


def video_motion(rng: random.Random) -> Question:
  height, width = VIDEO_SIZE
  background = rng.choice(BACKGROUNDS)
  shape, colour = rng.choice(SHAPES), rng.choice(_COLOUR_NAMES)
  direction = rng.choice(DIRECTIONS)
  side = rng.randint(12, 16)
  horizontal = direction in ("left", "right")
  along, across = (width, height) if horizontal else (height, width)
  middle = (across - side) // 2 + rng.randint(-8, 8)
  start, end = 2, along - side - 2
  steps = [start + (end - start) * i // (VIDEO_FRAMES - 1) for i in range(VIDEO_FRAMES)]
  if direction in ("left", "up"):
    steps.reverse()
  frames = [[Sprite(shape, COLOURS[colour], *((middle, s) if horizontal else (s, middle)),
                    side)] for s in steps]
  return _video(rng, "video-motion",
                ("Which way does the shape move?", "In which direction does the object move?"),
                ("It moves {v}.", "{V}.", "The shape moves {v}."), direction,
                _other(rng, DIRECTIONS, direction), "the shape moves {v}", background, frames)


def video_appear(rng: random.Random) -> Question:
  height, width = VIDEO_SIZE
  background = rng.choice(BACKGROUNDS)
  shape, colour = rng.choice(SHAPES), rng.choice(_COLOUR_NAMES)
  sprite = _anywhere(rng, height, width, shape, colour)
  if rng.random() < 0.5:
    wrong_shape, wrong_colour = shape, _other(rng, _COLOUR_NAMES, colour)
  else:
    wrong_shape, wrong_colour = _other(rng, SHAPES, shape), colour
  appear_at = VIDEO_FRAMES // 2
  frames = [[] if i < appear_at else [sprite] for i in range(VIDEO_FRAMES)]
  return _video(rng, "video-appear", ("What appears in the video?", "Which object appears?"),
                ("{V} appears.", "I see {v} appear.", "{V}."), f"a {colour} {shape}",
                f"a {wrong_colour} {wrong_shape}", "{v} appears", background, frames)


_SQUARE_ANSWERS = ("The square is {v}.", "It is {v}.", "{V}.")


def image_square(rng: random.Random) -> Question:
  height, width = rng.choice(IMAGE_SIZES)
  background, colour = rng.choice(BACKGROUNDS), rng.choice(_COLOUR_NAMES)
  side = rng.randint(min(height, width) * 3 // 4, min(height, width))
  sprite = Sprite("square", COLOURS[colour], rng.randint(0, height - side),
                  rng.randint(0, width - side), side)
  return _image(rng, "image-square",
                ("What colour is the square?", "Which colour is the square in the picture?"),
                _SQUARE_ANSWERS, colour, _other(rng, _COLOUR_NAMES, colour), "the square is {v}",
                height, width, background, [sprite])


def video_square(rng: random.Random) -> Question:
  height, width = VIDEO_SIZE
  background, colour = rng.choice(BACKGROUNDS), rng.choice(_COLOUR_NAMES)
  side = min(height, width) * 3 // 4
  frames = [[Sprite("square", COLOURS[colour], (height - side) // 2,
                    (width - side) * i // (VIDEO_FRAMES - 1), side)] for i in range(VIDEO_FRAMES)]
  return _video(rng, "video-square",
                ("What colour is the moving square?", "Which colour is the square in the video?"),
                _SQUARE_ANSWERS, colour, _other(rng, _COLOUR_NAMES, colour),
                "the moving square is {v}", background, frames)


IMAGE_TASKS: dict[str, Task] = {
    "image-shape": image_shape, "image-colour": image_colour, "image-count": image_count,
    "image-position": image_position,
}
VIDEO_TASKS: dict[str, Task] = {"video-motion": video_motion, "video-appear": video_appear}
EASY_TASKS: dict[str, Task] = {"image-square": image_square, "video-square": video_square}
