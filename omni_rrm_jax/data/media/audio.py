"""Audio files -> Whisper-style log-mel features for the Qwen2.5-Omni audio encoder.

Decoding: soundfile (libsndfile: WAV, FLAC, OGG, ...) first, else PyAV (MP3,
M4A, the audio track of an MP4, ...). Channels are averaged to mono. Other
rates are resampled to `cfg.sampling_rate` (16 kHz) with soxr at its high
quality, the resampler of librosa's default (`soxr_hq`), which transformers'
audio loading and the Qwen2.5-Omni preprocessing utilities call: a model sees
the features here that its released preprocessing gives it.

Features equal transformers' `WhisperFeatureExtractor(feature_size=128)` as
the Qwen2.5-Omni processor calls it (`padding="max_length"`, truncation on):

  the clip is cut at, and zero-padded to, `audio_chunk_seconds` (the
  checkpoint's `chunk_length`: 300 s for Qwen2.5-Omni, 30 s for Whisper)
  -> centred STFT: reflect padding of n_fft / 2, periodic Hann window of
     n_fft = 400, hop 160; power spectrum |X|^2; the last frame dropped
  -> 128 Slaney-normalised mel filters on the Slaney mel scale, 0-8 kHz
  -> log10 of max(mel, 1e-10); floored at (its maximum - 8); (x + 4) / 4

`feature_attention_mask` marks the frames that start inside the clip
(ceil(samples / hop) of them), exactly as the processor's mask.

The math runs in float64 (transformers uses torch float32 or numpy float64);
results are cast to float32.

Compute scales with the clip, not the padded chunk: a frame whose window
holds only padding has power exactly 0, so its value is the floor and is
filled in without an FFT. The output is chunk-sized whatever the clip
(128 x 30000 float32, 15 MB, for Qwen2.5-Omni's 300 s; a smaller
`audio_chunk_seconds` shrinks it; for a clip at least n_fft samples shorter
than the smaller chunk, the frames under the mask stay the same). Audio past
`max_audio_seconds` (default: the chunk) is never decoded.
"""

from __future__ import annotations

import functools
import math
import os
import struct
from pathlib import Path

import av
import numpy as np
import soundfile
import soxr

from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media.errors import (check_file, check_finite, decode_error,
                                            display_name)
from omni_rrm_jax.data.records import BadRecord

_LOG_FLOOR = 1e-10
_DYNAMIC_RANGE = 8.0  # log10 units kept below the loudest bin
_FRAMES_PER_BLOCK = 2048  # bounds the FFT's working memory on long clips
_SOUNDFILE_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff"}
_RIFF_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streaming writers leave these placeholders


def load_audio(path: str | os.PathLike[str], cfg: MediaConfig, *,
               name: str | None = None) -> np.ndarray:
  """Decodes an audio file to mono float32 at `cfg.sampling_rate`.

  Args:
    path: the audio (or video) file.
    cfg: target rate and `max_audio_samples`.
    name: how errors refer to the file (default: `path`).

  Returns:
    float32 [samples], at most `cfg.max_audio_samples` long.

  Raises:
    BadRecord: missing, empty, corrupt or truncated file, no audio stream, or
      NaN / Inf samples (a float WAV or AIFF can store them).
  """
  name = display_name(path, name)
  path = check_file(path, "audio", name)
  try:
    samples_cn, rate = _decode_soundfile(path, cfg, name)
  except _NotSoundfile as sf_error:
    try:
      samples_cn, rate = _decode_pyav(path, cfg)
    except Exception as e:  # PyAV raises many types on damaged files; all mean "skip it".
      reported = sf_error.cause if path.suffix.lower() in _SOUNDFILE_SUFFIXES else e
      raise decode_error("audio", path, name, reported) from None
  if samples_cn.shape[1] == 0:
    raise BadRecord("unreadable audio", f"{name}: no samples")
  check_finite(samples_cn, "audio", name)
  mono = samples_cn.astype(np.float64).mean(axis=0)
  if rate != cfg.sampling_rate:
    mono = soxr.resample(mono, rate, cfg.sampling_rate, quality="HQ")
  return mono[:cfg.max_audio_samples].astype(np.float32)


class _NotSoundfile(Exception):
  """libsndfile cannot open the file; PyAV may."""

  def __init__(self, cause: Exception):
    super().__init__(str(cause))
    self.cause = cause


def _input_limit(rate: int, cfg: MediaConfig) -> int:
  # Input samples that cover max_audio_samples after resampling.
  return math.ceil(cfg.max_audio_samples * rate / cfg.sampling_rate)


def _decode_soundfile(path: Path, cfg: MediaConfig, name: str) -> tuple[np.ndarray, int]:
  try:
    info = soundfile.info(str(path))
  except Exception as e:  # libsndfile's "format not recognised" and friends
    raise _NotSoundfile(e) from None
  if info.format in ("WAV", "WAVEX") and _riff_is_truncated(path):
    raise BadRecord("unreadable audio", f"{name}: truncated (data chunk shorter than its header)")
  limit = _input_limit(info.samplerate, cfg)
  known_length = 0 < info.frames < 2**62  # libsndfile reports a huge count when unknown
  if info.format == "MP3" and not _mp3_states_length(path):
    # Without a Xing / Info / VBRI frame the count is a guess from the file size
    # and the first frame's bitrate, wrong for variable-bitrate files: read to the end.
    known_length = False
  wanted = min(info.frames, limit) if known_length else limit
  try:
    data_nc, rate = soundfile.read(str(path), frames=wanted, dtype="float32", always_2d=True)
  except Exception as e:
    raise decode_error("audio", path, name, e) from None
  if known_length and len(data_nc) < wanted:
    raise BadRecord("unreadable audio", f"{name}: truncated ({len(data_nc)} of {wanted} frames)")
  return data_nc.T, rate


def _riff_is_truncated(path: Path) -> bool:
  """Whether a WAV's data chunk declares more bytes than the file holds.

  libsndfile silently shortens such files to what is present, so a cut-off
  download would otherwise pass as a shorter clip.
  """
  size = path.stat().st_size
  with open(path, "rb") as f:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
      return False  # RF64 and friends: trust libsndfile
    offset = 12
    for _ in range(64):  # real files have a handful of chunks
      chunk = f.read(8)
      if len(chunk) < 8:
        return False
      chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
      offset += 8
      if chunk_id == b"data":
        return chunk_size not in _RIFF_UNKNOWN_SIZES and offset + chunk_size > size
      offset += chunk_size + (chunk_size & 1)  # chunks are word aligned
      f.seek(offset)
  return False


def _mp3_states_length(path: Path) -> bool:
  """Whether an MP3's first frame is a Xing, Info or VBRI header (which state
  the stream's frame count), after any ID3v2 tag."""
  with open(path, "rb") as f:
    head = f.read(10)
    start = 0
    if len(head) == 10 and head[:3] == b"ID3":
      # The tag size is four 7-bit bytes ("syncsafe"), plus a footer when flagged.
      start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))
      start += 10 if head[5] & 0x10 else 0
    f.seek(start)
    frame = f.read(192)  # the tags sit within the first frame's side information
  return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


def _decode_pyav(path: Path, cfg: MediaConfig) -> tuple[np.ndarray, int]:
  with av.open(str(path)) as container:
    if not container.streams.audio:
      raise ValueError("no audio stream")
    stream = container.streams.audio[0]
    rate = stream.rate
    limit = _input_limit(rate, cfg)
    # Planar float at the source rate and layout: PyAV only converts the
    # sample format here; mixing and resampling stay ours.
    to_float = av.AudioResampler(format="fltp", rate=rate)
    chunks, count = [], 0
    for frame in container.decode(stream):
      for converted in to_float.resample(frame):
        chunks.append(converted.to_ndarray())
        count += chunks[-1].shape[1]
      if count >= limit:
        break
    else:
      for converted in to_float.resample(None):
        chunks.append(converted.to_ndarray())
  if not chunks:
    raise ValueError("no audio frames")
  return np.concatenate(chunks, axis=1)[:, :limit], rate


@functools.lru_cache(maxsize=8)
def mel_filter_bank(num_mels: int, n_fft: int, sampling_rate: int) -> np.ndarray:
  """Slaney-scale, Slaney-normalised triangular filters, 0 Hz to 8 kHz.

  Returns:
    float64 [n_fft // 2 + 1, num_mels]; read-only (cached).
  """
  edges_mel = np.linspace(_hz_to_mel(0.0), _hz_to_mel(8000.0), num_mels + 2)
  edges_hz = _mel_to_hz(edges_mel)
  bins_hz = np.linspace(0, sampling_rate // 2, n_fft // 2 + 1)
  lower, center, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
  rising = (bins_hz[:, None] - lower) / (center - lower)
  falling = (upper - bins_hz[:, None]) / (upper - center)
  filters = np.maximum(0.0, np.minimum(rising, falling))
  # Equal area per filter (Slaney): divide by half the filter's width.
  filters *= 2.0 / (upper - lower)
  filters.setflags(write=False)
  return filters


# The Slaney mel scale: linear below 1 kHz (3 mel / 200 Hz), logarithmic above.
_LINEAR_HZ_PER_MEL = 200.0 / 3
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _LINEAR_HZ_PER_MEL
_LOG_STEP = math.log(6.4) / 27.0


def _hz_to_mel(hz):
  hz = np.asarray(hz, np.float64)
  linear = hz / _LINEAR_HZ_PER_MEL
  log = _LOG_START_MEL + np.log(np.maximum(hz, _LOG_START_HZ) / _LOG_START_HZ) / _LOG_STEP
  return np.where(hz >= _LOG_START_HZ, log, linear)


def _mel_to_hz(mel):
  mel = np.asarray(mel, np.float64)
  linear = mel * _LINEAR_HZ_PER_MEL
  log = _LOG_START_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _LOG_START_MEL) - _LOG_START_MEL))
  return np.where(mel >= _LOG_START_MEL, log, linear)


def log_mel_features(waveform: np.ndarray, cfg: MediaConfig) -> tuple[np.ndarray, np.ndarray]:
  """Log-mel features of one mono clip, padded to one chunk.

  Args:
    waveform: float [samples] at `cfg.sampling_rate`; longer than a chunk is cut.
    cfg: STFT and mel settings, `audio_chunk_seconds`.

  Returns:
    (input_features float32 [feature_size, frames], feature_attention_mask
     int32 [frames]) with frames = chunk samples // hop_length.
  """
  n_fft, hop = cfg.n_fft, cfg.hop_length
  chunk = cfg.audio_chunk_samples
  clip = np.asarray(waveform, np.float32)[:chunk].astype(np.float64)
  num_frames = chunk // hop
  # Frames past `work` see only zeros (see the module docstring); a chunk
  # shorter than that is computed whole.
  work = min(chunk, len(clip) + n_fft)
  signal = np.zeros(work)
  signal[:len(clip)] = clip
  computed = min(num_frames, work // hop + 1)
  padded = np.pad(signal, n_fft // 2, mode="reflect")
  windows = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
  filters = mel_filter_bank(cfg.feature_size, n_fft, cfg.sampling_rate)
  hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic
  log_mel_fm = np.empty((computed, cfg.feature_size))
  for start in range(0, computed, _FRAMES_PER_BLOCK):
    stop = min(computed, start + _FRAMES_PER_BLOCK)
    spectrum = np.fft.rfft(windows[start:stop] * hann, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    log_mel_fm[start:stop] = np.log10(np.maximum(power @ filters, _LOG_FLOOR))
  # The frames past `computed` hold the floor, the smallest value any frame
  # can have: they never raise the maximum, and after the clamp they all hold
  # one value. Only the computed frames go through the array passes.
  floor = math.log10(_LOG_FLOOR)
  top = max(float(log_mel_fm.max(initial=floor)), floor)
  log_mel_fm = np.maximum(log_mel_fm, top - _DYNAMIC_RANGE)
  features = np.empty((cfg.feature_size, num_frames), np.float32)
  features[:, :computed] = ((log_mel_fm + 4.0) / 4.0).T
  features[:, computed:] = np.float32((max(floor, top - _DYNAMIC_RANGE) + 4.0) / 4.0)
  mask = np.zeros(num_frames, np.int32)
  mask[:math.ceil(len(clip) / hop)] = 1
  return np.ascontiguousarray(features), mask


def process_audio(path: str | os.PathLike[str], cfg: MediaConfig, *,
                  name: str | None = None) -> dict[str, np.ndarray]:
  """An audio file -> the audio inputs of a Qwen2.5-Omni model.

  Returns:
    {"input_features": float32 [1, feature_size, frames],
     "feature_attention_mask": int32 [1, frames]}.

  Raises:
    BadRecord: the file cannot be used (see `load_audio`).
  """
  features, mask = log_mel_features(load_audio(path, cfg, name=name), cfg)
  check_finite(features, "audio", display_name(path, name))
  return {"input_features": features[None], "feature_attention_mask": mask[None]}
