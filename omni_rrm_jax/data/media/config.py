"""Media preprocessing constants and memory limits, as one frozen config.

The defaults are those of the released Qwen2.5-VL / Qwen2.5-Omni checkpoints
(their `preprocessor_config.json`, plus the video processor's class defaults,
which those checkpoints do not override). `from_preprocessor_config` reads any
such file, so a checkpoint's own settings are used when it has them.

The limits bound what one record may cost in memory:

  image_max_pixels   images are downscaled (smart resize) to at most this.
  max_decode_pixels  an image whose header says it is larger is decoded at a
                     reduced scale (JPEG) or refused (other formats), never
                     decoded whole.
  video_max_frames   at most this many frames are sampled, each downscaled to at
                     most video_max_pixels; only sampled frames are kept.
  max_video_seconds  frames past this point are never sampled or decoded.
  max_audio_seconds  audio past this point is never decoded.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# PIL's numbering (Image.Resampling.BICUBIC == 3), as preprocessor configs store it.
PIL_BICUBIC = 3


@dataclasses.dataclass(frozen=True)
class MediaConfig:
  """How images, video frames and audio become model inputs.

  Attributes:
    patch_size: spatial patch side of the vision encoder.
    merge_size: patches merged per side before the language model; sizes are
      multiples of `patch_size * merge_size`.
    temporal_patch_size: frames per temporal patch (an image is repeated).
    resample: PIL resampling filter id for resizing (3 = bicubic).
    rescale_factor: uint8 -> [0, 1] factor.
    image_mean: per-channel mean, RGB.
    image_std: per-channel std, RGB.
    image_min_pixels: smallest resized image area.
    image_max_pixels: largest resized image area.
    max_decode_pixels: largest image area decoded at full resolution.
    video_min_pixels: smallest resized frame area.
    video_max_pixels: largest resized frame area.
    video_fps: frames sampled per second of video.
    video_min_frames: fewest frames sampled (if the video has them).
    video_max_frames: most frames sampled.
    max_video_seconds: only the first this many seconds are sampled; None for
      the whole video.
    video_cap_pixels_per_frame: also cap each frame at an even share of a
      total pixel budget of `video_max_tokens` tokens (transformers'
      `cap_pixels_per_frame`, off by default there as here).
    video_max_tokens: the token budget used by `video_cap_pixels_per_frame`.
    sampling_rate: audio rate the features are computed at (Hz).
    feature_size: mel bins.
    n_fft: STFT window length (samples).
    hop_length: STFT hop (samples).
    audio_chunk_seconds: every clip is zero-padded to (and cut at) this length,
      as the Whisper feature extractor's `chunk_length` does.
    max_audio_seconds: audio past this is not decoded; None means
      `audio_chunk_seconds`.
    padding_value: value of padded audio samples.
  """

  patch_size: int = 14
  merge_size: int = 2
  temporal_patch_size: int = 2
  resample: int = PIL_BICUBIC
  rescale_factor: float = 1 / 255
  image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
  image_std: tuple[float, ...] = OPENAI_CLIP_STD
  image_min_pixels: int = 56 * 56
  image_max_pixels: int = 28 * 28 * 16384
  max_decode_pixels: int = 8192 * 8192
  video_min_pixels: int = 128 * 28 * 28
  video_max_pixels: int = 768 * 28 * 28
  video_fps: float = 2.0
  video_min_frames: int = 4
  video_max_frames: int = 768
  max_video_seconds: float | None = None
  video_cap_pixels_per_frame: bool = False
  video_max_tokens: int = 128000
  sampling_rate: int = 16000
  feature_size: int = 128
  n_fft: int = 400
  hop_length: int = 160
  audio_chunk_seconds: int = 300
  max_audio_seconds: float | None = None
  padding_value: float = 0.0

  def __post_init__(self):
    if self.image_min_pixels > self.image_max_pixels:
      raise ValueError(f"image_min_pixels {self.image_min_pixels} > image_max_pixels "
                       f"{self.image_max_pixels}")
    if self.video_min_pixels > self.video_max_pixels:
      raise ValueError(f"video_min_pixels {self.video_min_pixels} > video_max_pixels "
                       f"{self.video_max_pixels}")
    if self.video_fps <= 0 or self.video_min_frames < 1 or self.video_max_frames < 1:
      raise ValueError("video_fps, video_min_frames and video_max_frames must be positive")
    if self.video_max_frames < self.temporal_patch_size:
      raise ValueError(f"video_max_frames {self.video_max_frames} < temporal_patch_size "
                       f"{self.temporal_patch_size}")
    if len(self.image_mean) != 3 or len(self.image_std) != 3:
      raise ValueError("image_mean and image_std need one value per RGB channel")
    if self.max_audio_seconds is not None and not (
        0 < self.max_audio_seconds <= self.audio_chunk_seconds):
      # The processor cuts every clip at one chunk, so a longer cap would
      # promise audio the features cannot hold.
      raise ValueError(f"max_audio_seconds must be in (0, audio_chunk_seconds="
                       f"{self.audio_chunk_seconds}], got {self.max_audio_seconds}")
    if self.max_video_seconds is not None and self.max_video_seconds <= 0:
      raise ValueError(f"max_video_seconds must be positive, got {self.max_video_seconds}")
    if self.padding_value != 0.0:
      # Zero padding is what lets audio features skip the silent tail.
      raise ValueError(f"only padding_value 0.0 is supported, got {self.padding_value}")

  @property
  def factor(self) -> int:
    """Resized sides are multiples of this."""
    return self.patch_size * self.merge_size

  @property
  def audio_chunk_samples(self) -> int:
    return self.audio_chunk_seconds * self.sampling_rate

  @property
  def max_audio_samples(self) -> int:
    """Samples (at `sampling_rate`) kept from one clip."""
    seconds = self.audio_chunk_seconds if self.max_audio_seconds is None else self.max_audio_seconds
    return min(self.audio_chunk_samples, int(seconds * self.sampling_rate))

  def to_preprocessor_configs(self, audio: bool = True) -> dict[str, dict[str, Any]]:
    """This preprocessing as Hugging Face processor files, by file name.

    `preprocessor_config.json` holds the image processor's and (with `audio`,
    for a model with an audio encoder) the Whisper feature extractor's
    settings, as the released Qwen2.5-VL and Qwen2.5-Omni folders do;
    `video_preprocessor_config.json` the video processor's. transformers'
    Qwen2-VL image / video processors and `WhisperFeatureExtractor` load them
    as these settings, and `from_preprocessor_config` reads them back. The
    memory limits (`max_decode_pixels`, `max_*_seconds`) are this
    implementation's own and are not written.
    """
    shared = {
        "patch_size": self.patch_size, "merge_size": self.merge_size,
        "temporal_patch_size": self.temporal_patch_size, "resample": self.resample,
        "rescale_factor": self.rescale_factor, "image_mean": list(self.image_mean),
        "image_std": list(self.image_std), "do_resize": True, "do_rescale": True,
        "do_normalize": True, "do_convert_rgb": True,
    }
    samples = self.audio_chunk_samples
    image = {
        **shared, "image_processor_type": "Qwen2VLImageProcessor",
        "min_pixels": self.image_min_pixels, "max_pixels": self.image_max_pixels,
        "size": {"shortest_edge": self.image_min_pixels, "longest_edge": self.image_max_pixels},
    }
    whisper = {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": self.feature_size, "sampling_rate": self.sampling_rate,
        "n_fft": self.n_fft, "hop_length": self.hop_length,
        "chunk_length": self.audio_chunk_seconds, "n_samples": samples,
        "nb_max_frames": samples // self.hop_length, "padding_value": self.padding_value,
        "padding_side": "right", "return_attention_mask": True, "dither": 0.0,
    }
    video = {
        **shared, "video_processor_type": "Qwen2VLVideoProcessor",
        "min_pixels": self.video_min_pixels, "max_pixels": self.video_max_pixels,
        "size": {"shortest_edge": self.video_min_pixels, "longest_edge": self.video_max_pixels},
        "fps": self.video_fps, "min_frames": self.video_min_frames,
        "max_frames": self.video_max_frames, "do_sample_frames": True,
    }
    if self.video_cap_pixels_per_frame:
      video.update(cap_pixels_per_frame=True, max_video_tokens=self.video_max_tokens)
    return {"preprocessor_config.json": {**image, **(whisper if audio else {})},
            "video_preprocessor_config.json": video}

  @classmethod
  def from_preprocessor_config(cls, config: Mapping[str, Any],
                               video_config: Mapping[str, Any] | None = None,
                               **overrides: Any) -> MediaConfig:
    """Builds a config from a Hugging Face `preprocessor_config.json`.

    Args:
      config: the decoded `preprocessor_config.json` (image processor and
        feature extractor keys; unknown keys are ignored).
      video_config: the decoded `video_preprocessor_config.json`, if the
        checkpoint has one; else the video processor's class defaults apply.
      **overrides: fields set last, e.g. the memory limits.

    Raises:
      ValueError: a setting this implementation does not reproduce (e.g.
        `do_normalize: false`, non-zero dither).
    """
    for flag in ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb"):
      for source in (config, video_config or {}):
        if source.get(flag) is False:
          raise ValueError(f"{flag}=false is not supported")
    if config.get("dither", 0.0):
      raise ValueError(f"audio dither {config['dither']} is not supported (it is random)")
    fields: dict[str, Any] = {}
    for key in ("patch_size", "merge_size", "temporal_patch_size", "resample",
                "rescale_factor", "feature_size", "n_fft", "hop_length",
                "sampling_rate", "padding_value"):
      if key in config:
        fields[key] = config[key]
    for key in ("image_mean", "image_std"):
      if key in config:
        fields[key] = tuple(float(v) for v in config[key])
    if "chunk_length" in config:
      fields["audio_chunk_seconds"] = int(config["chunk_length"])
    fields.update(_pixel_range(config, "image"))
    if video_config:
      fields.update(_pixel_range(video_config, "video"))
      for key, field in (("fps", "video_fps"), ("min_frames", "video_min_frames"),
                         ("max_frames", "video_max_frames"),
                         ("cap_pixels_per_frame", "video_cap_pixels_per_frame"),
                         ("max_video_tokens", "video_max_tokens")):
        if video_config.get(key) is not None:
          fields[field] = video_config[key]
    fields.update(overrides)
    return cls(**fields)


def _pixel_range(config: Mapping[str, Any], prefix: str) -> dict[str, int]:
  # Older files carry min_pixels / max_pixels; newer ones a size dict with
  # shortest_edge / longest_edge meaning the same areas. The flat keys win,
  # as in transformers.
  size = config.get("size") or {}
  out = {}
  low = config.get("min_pixels", size.get("shortest_edge"))
  high = config.get("max_pixels", size.get("longest_edge"))
  if low is not None:
    out[f"{prefix}_min_pixels"] = int(low)
  if high is not None:
    out[f"{prefix}_max_pixels"] = int(high)
  return out
