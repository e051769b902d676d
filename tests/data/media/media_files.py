"""Real media files written into a test's tmp_path (PIL, PyAV, soundfile)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import soundfile
from PIL import Image


def noise_image(height: int, width: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
  """Random pixels in any PIL mode (RGBA gets a varied alpha channel)."""
  rgba = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
  image = Image.fromarray(rgba, "RGBA")
  if mode == "P":
    return image.convert("RGB").quantize(32)
  return image.convert(mode)


def write_image(path: Path, image: Image.Image, **save_kwargs) -> Path:
  image.save(path, **save_kwargs)
  return path


def square_frame(index: int, num_frames: int, height: int, width: int) -> np.ndarray:
  """uint8 [H, W, 3]: a yellow square moving left to right over dark blue."""
  frame = np.zeros((height, width, 3), np.uint8)
  frame[..., 2] = 60
  x = int(index * (width - 24) / max(1, num_frames - 1))
  frame[height // 3:height // 3 + 24, x:x + 24] = (255, 210, 0)
  return frame


def write_mp4(path: Path, *, num_frames: int = 40, fps: int = 20, height: int = 90,
              width: int = 124, audio_rate: int | None = None) -> Path:
  """An H.264 (or MPEG-4) MP4 of a moving square; optionally a stereo AAC tone track."""
  with av.open(str(path), "w") as container:
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    video = container.add_stream(codec, rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    audio = None
    if audio_rate:
      audio = container.add_stream("aac", rate=audio_rate)
      audio.layout = "stereo"
    for i in range(num_frames):
      frame = av.VideoFrame.from_ndarray(square_frame(i, num_frames, height, width), format="rgb24")
      container.mux(video.encode(frame))
    container.mux(video.encode())
    if audio is not None:
      seconds = np.arange(int(num_frames / fps * audio_rate)) / audio_rate
      tone = (0.3 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32)
      for start in range(0, len(tone), 1024):
        block = np.ascontiguousarray(np.stack([tone[start:start + 1024]] * 2))
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = audio_rate, start
        container.mux(audio.encode(frame))
      container.mux(audio.encode())
  return path


def tone(seconds: float, rate: int, freqs=(440.0,), amplitude: float = 0.3) -> np.ndarray:
  """float32 [samples]: a sum of sines."""
  t = np.arange(int(round(seconds * rate))) / rate
  return (amplitude * sum(np.sin(2 * np.pi * f * t) for f in freqs)).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, rate: int, **kwargs) -> Path:
  soundfile.write(str(path), samples, rate, **kwargs)
  return path


def truncate(src: Path, dst: Path, fraction: float) -> Path:
  """A copy of `src` cut to `fraction` of its bytes."""
  data = src.read_bytes()
  dst.write_bytes(data[:int(len(data) * fraction)])
  return dst


def write_vbr_mp3(path: Path, samples: np.ndarray, rate: int, *, xing: bool) -> Path:
  """A variable-bitrate mono MP3 (LAME, quality 4), with or without its Xing
  header frame (the frame that states the stream's length)."""
  with av.open(str(path), "w", format="mp3", options={"write_xing": "1" if xing else "0"}) as c:
    stream = c.add_stream("libmp3lame", rate=rate, layout="mono")
    stream.codec_context.flags |= 2  # QSCALE: a quality target, so the bitrate varies
    stream.codec_context.global_quality = 4 * 118  # FF_QP2LAMBDA * quality 4
    for start in range(0, len(samples), 4608):
      frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, start:start + 4608]),
                                         format="fltp", layout="mono")
      frame.sample_rate = rate
      for packet in stream.encode(frame):
        c.mux(packet)
    for packet in stream.encode(None):
      c.mux(packet)
  return path


def write_webm(path: Path, *, num_frames: int = 32, fps: int = 8, size: int = 64) -> Path:
  """A VP8 WebM of noise frames (its container states a duration, not a frame count)."""
  with av.open(str(path), "w", format="webm") as c:
    stream = c.add_stream("libvpx", rate=fps)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    for i in range(num_frames):
      pixels = np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8)
      for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
        c.mux(packet)
    for packet in stream.encode(None):
      c.mux(packet)
  return path
