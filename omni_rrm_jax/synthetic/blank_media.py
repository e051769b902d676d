"""The media-blind control: held-out records whose media carry no information.

Every media file of a record is replaced by a blank one of the same shape: a
PNG of the same size in one flat colour, an MP4 with the same frame count,
frame size and frame rate in that colour, a WAV of the same length and sample
rate holding zeros. The encoders then see the same number of patches and
log-mel frames as for the real file, so the only thing the control takes
away is what the media show. A model that still ranks such pairs well has
learned to answer from the text alone (the task leaks its answer into the
words), not from the media.

The colour is one fixed grey for every file: a per-file colour (the original's
mean, say) would keep a hint of the answer to "what colour is the shape?".

Blank files go under `<media_root>/<folder>/`, mirroring the originals'
relative paths, so the blind records resolve under the same media root.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable

import av
import numpy as np
import soundfile
from PIL import Image

from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.synthetic.audio import write_wav
from omni_rrm_jax.synthetic.shapes import write_mp4, write_png

BLANK_RGB = (128, 128, 128)
BLIND_FOLDER = "blind"


def _flat(height: int, width: int) -> np.ndarray:
  frame = np.empty((height, width, 3), np.uint8)
  frame[:] = BLANK_RGB
  return frame


def blank_png(src: str, dst: str) -> None:
  """Writes a PNG of `src`'s size in one flat colour."""
  with Image.open(src) as image:
    width, height = image.size
  write_png(dst, _flat(height, width))


def video_shape(path: str) -> tuple[int, int, int, object]:
  """(frames, height, width, frame rate) of a video file, by decoding it."""
  with av.open(path) as container:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.base_rate
    frames = sum(1 for _ in container.decode(stream))
    return frames, stream.height, stream.width, rate


def blank_mp4(src: str, dst: str) -> None:
  """Writes an MP4 with `src`'s frame count, frame size and rate, all frames one colour."""
  frames, height, width, rate = video_shape(src)
  write_mp4(dst, [_flat(height, width)] * frames, rate)


def blank_wav(src: str, dst: str) -> None:
  """Writes a WAV of `src`'s length and sample rate holding silence."""
  info = soundfile.info(src)
  write_wav(dst, np.zeros(info.frames, np.float32), info.samplerate)


_WRITERS = {".png": blank_png, ".mp4": blank_mp4, ".wav": blank_wav}


def blank_copy(src: str, dst: str) -> None:
  """Writes the blank counterpart of one media file (chosen by its suffix).

  Raises:
    ValueError: a suffix other than .png, .mp4 or .wav.
  """
  suffix = os.path.splitext(src)[1].lower()
  if suffix not in _WRITERS:
    raise ValueError(f"{src}: no blank writer for {suffix!r}; known: {', '.join(_WRITERS)}")
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  _WRITERS[suffix](src, dst)


def _blind_path(path: str, folder: str) -> str:
  return f"{folder}/{path}"


def blind_records(records: Iterable[PreferenceRecord], media_root: str,
                  folder: str = BLIND_FOLDER) -> list[PreferenceRecord]:
  """The media records of `records` with every media file replaced by a blank one.

  Records without media (text) are left out: their blind accuracy would be
  their accuracy. Everything but the media paths is kept as it was, so the
  control scores the same prompts, responses and labels.

  Args:
    records: held-out records whose media paths are relative to `media_root`.
    media_root: where the originals are; the blank files are written under
      `media_root/folder`.
    folder: the blank files' folder, relative to `media_root`.

  Returns:
    The blind records, in the order of `records`.
  """
  out = []
  for record in records:
    if not record.media_paths():
      continue
    for path in record.media_paths():
      blank_copy(os.path.join(media_root, path),
                 os.path.join(media_root, _blind_path(path, folder)))
    media = dict(record.media,
                 images=[_blind_path(p, folder) for p in record.media["images"]])
    for key in ("video", "audio"):
      if media[key]:
        media[key] = _blind_path(media[key], folder)
    out.append(dataclasses.replace(record, media=media))
  return out
