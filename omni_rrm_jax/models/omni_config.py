"""The Qwen2.5-Omni thinker's configuration, read from a transformers config.

`OmniHostInputs` is the host-side (numpy) half of the thinker's fully traced
call: per example, in the data workers, the vision layout, the M-RoPE
positions (audio lengths included) and each audio clip's token count and
window layout.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np

from omni_rrm_jax.models import omni_rope
from omni_rrm_jax.models.audio import AudioEncoderConfig, audio_config_from_hf
from omni_rrm_jax.models.audio_layout import build_audio_layout, feat_extract_output_lengths
from omni_rrm_jax.models.config import DecoderConfig, decoder_config_from_hf, resolve_dtype
from omni_rrm_jax.models.qwen2_5_vl import HostInputs
from omni_rrm_jax.models.vision import VisionConfig, vision_config_from_hf

ARCHITECTURE = "Qwen2_5OmniThinkerForConditionalGeneration"
# Ours only (transformers has no such class): the thinker trunk with a score head.
CLASSIFIER_ARCHITECTURE = "Qwen2_5OmniThinkerForSequenceClassification"
MODEL_TYPE = "qwen2_5_omni_thinker"
# The full model of released checkpoints, which nests the thinker (see
# `architectures.CONTAINERS`).
FULL_ARCHITECTURE = "Qwen2_5OmniForConditionalGeneration"
FULL_MODEL_TYPE = "qwen2_5_omni"
# transformers' rotary falls back to this split when rope_parameters has none.
DEFAULT_MROPE_SECTION = (16, 24, 24)
# Top-level parameter-path prefixes of the encoders (see `freeze_encoders`).
ENCODER_PREFIXES = ("visual", "audio_tower")


@dataclasses.dataclass(frozen=True)
class OmniThinkerConfig:
  """The three towers' configs, the placeholder ids and the position rules.

  Attributes:
    text: the text decoder (Qwen2 layout, M-RoPE `rope`).
    vision: the vision encoder.
    audio: the audio encoder.
    image_token_id: placeholder of one merged image token.
    video_token_id: placeholder of one merged video token.
    audio_token_id: placeholder of one audio token.
    position_id_per_seconds: temporal position ids per second of media.
    seconds_per_chunk: length of the video / audio chunks that are
      interleaved when a video's own audio is used.
    freeze_encoders: the encoders' outputs are wrapped in `stop_gradient`, so
      no gradient reaches `visual.*` / `audio_tower.*` (the optimizer must
      still mask them: see `omni.encoder_param_labels`).
    architecture: the `config.json` architecture written on export.
    hf_config_json: the full transformers config, written back on export.
  """
  text: DecoderConfig
  vision: VisionConfig
  audio: AudioEncoderConfig
  image_token_id: int
  video_token_id: int
  audio_token_id: int
  position_id_per_seconds: float = 25
  seconds_per_chunk: float = 2
  freeze_encoders: bool = False
  architecture: str = ARCHITECTURE
  hf_config_json: str = "{}"

  @property
  def tie_word_embeddings(self) -> bool:
    return self.text.tie_word_embeddings

  @property
  def initializer_range(self) -> float:
    return self.text.initializer_range

  @property
  def pad_token_id(self) -> int | None:
    return self.text.pad_token_id

  @property
  def num_labels(self) -> int:
    return self.text.num_labels

  def host_inputs(self) -> OmniHostInputs:
    """The host-side preparation of fully traced inputs for this model."""
    v, a = self.vision, self.audio
    return OmniHostInputs(
        image_token_id=self.image_token_id, video_token_id=self.video_token_id,
        spatial_merge_size=v.spatial_merge_size, window_size=v.window_size,
        patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size,
        tokens_per_second=float(self.position_id_per_seconds),
        audio_token_id=self.audio_token_id,
        position_id_per_seconds=float(self.position_id_per_seconds),
        seconds_per_chunk=float(self.seconds_per_chunk), n_window=a.n_window,
        num_mel_bins=a.num_mel_bins)

  def __post_init__(self):
    width = self.text.hidden_size
    if self.vision.out_hidden_size != width or self.audio.output_dim != width:
      raise ValueError(f"vision out_hidden_size {self.vision.out_hidden_size} and audio "
                       f"output_dim {self.audio.output_dim} must equal the text hidden_size "
                       f"{width}")


def omni_thinker_config_from_hf(hf, **overrides) -> OmniThinkerConfig:
  """Builds an `OmniThinkerConfig` from a transformers `Qwen2_5OmniThinkerConfig`.

  Args:
    hf: the transformers thinker config (`text_config`, `vision_config`,
      `audio_config`).
    **overrides: `dtype`, `param_dtype`, `remat` (applied to all three
      towers), `attention` and `scan_layers` (the text decoder's),
      `architecture`, and `freeze_encoders` (default: the config's own
      `freeze_encoders` attribute if set, so
      `from_pretrained(path, freeze_encoders=True)` works, else False).
  """
  architecture = overrides.pop("architecture", ARCHITECTURE)
  attention = overrides.pop("attention", "reference")
  freeze = bool(overrides.pop("freeze_encoders", getattr(hf, "freeze_encoders", False)))
  scan_layers = bool(overrides.pop("scan_layers", False))
  shared = {k: (resolve_dtype(v) if k.endswith("dtype") else v) for k, v in overrides.items()}
  unknown = set(shared) - {"dtype", "param_dtype", "remat"}
  if unknown:
    raise ValueError(f"unknown config overrides {sorted(unknown)}")
  t = hf.text_config
  text = decoder_config_from_hf(
      t, "qwen2", architecture=architecture,
      head_dim=getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads,
      # The thinker ties by its own flag; text_config's (True by default) is ignored.
      tie_word_embeddings=bool(hf.tie_word_embeddings), attention=attention,
      scan_layers=scan_layers, **shared)
  if "mrope_section" not in text.rope_dict:
    rope = {**text.rope_dict, "mrope_section": DEFAULT_MROPE_SECTION}
    text = dataclasses.replace(text, rope=tuple(sorted(rope.items())))
  # The Omni vision config has no tokens_per_second (Omni's positions use
  # position_id_per_seconds instead); the shared builder reads one.
  vision_hf = copy.copy(hf.vision_config)
  vision_hf.tokens_per_second = hf.position_id_per_seconds
  raw = json.loads(hf.to_json_string(use_diff=False))
  raw.pop("freeze_encoders", None)  # ours, not a transformers field
  return OmniThinkerConfig(
      text=text, vision=vision_config_from_hf(vision_hf, **shared),
      audio=audio_config_from_hf(hf, **shared), image_token_id=hf.image_token_id,
      video_token_id=hf.video_token_id, audio_token_id=hf.audio_token_id,
      position_id_per_seconds=hf.position_id_per_seconds,
      seconds_per_chunk=hf.seconds_per_chunk, freeze_encoders=freeze,
      architecture=architecture, hf_config_json=json.dumps(raw, sort_keys=True))


def omni_thinker_classifier_config_from_hf(hf, **overrides) -> OmniThinkerConfig:
  """As `omni_thinker_config_from_hf`, for the score-head variant.

  `num_labels` and `pad_token_id` are read from the top-level config (where
  sequence classifiers keep them), the pad id falling back to the text
  config's.
  """
  overrides.setdefault("architecture", CLASSIFIER_ARCHITECTURE)
  cfg = omni_thinker_config_from_hf(hf, **overrides)
  pad = getattr(hf, "pad_token_id", None)
  text = dataclasses.replace(cfg.text, num_labels=getattr(hf, "num_labels", None) or 1,
                             pad_token_id=cfg.text.pad_token_id if pad is None else pad)
  return dataclasses.replace(cfg, text=text)


@dataclasses.dataclass(frozen=True)
class OmniHostInputs(HostInputs):
  """`HostInputs` of the thinker: its position rules and its audio clips.

  Plain numbers only, so it pickles into data-loader workers. The vision
  layout is Qwen2.5-VL's (inherited); positions follow `omni_rope`, and an
  audio clip of F log-mel frames becomes `audio_tokens(F)` placeholders and
  the window layout `audio_layout(F)`.

  Attributes (besides `HostInputs`'):
    position_id_per_seconds: temporal position ids per second of media.
    seconds_per_chunk: interleaving chunk length (video with its audio).
    n_window: half the audio encoder's window, in frames.
    num_mel_bins: mel bins the audio encoder reads.
  """
  position_id_per_seconds: float = 25.0
  seconds_per_chunk: float = 2.0
  n_window: int = 100
  num_mel_bins: int = 128

  def __post_init__(self):
    if self.audio_token_id is None:
      raise ValueError("OmniHostInputs needs the audio_token_id")

  def position_ids(self, input_ids_t, image_grid_thw=None, video_grid_thw=None,
                   second_per_grid_ts=None, audio_frames=None) -> np.ndarray:
    """M-RoPE position ids int32 [3, T] of one unpadded sequence.

    Args:
      input_ids_t: the sequence, placeholders expanded.
      image_grid_thw: [num_images, 3] or None.
      video_grid_thw: [num_videos, 3] or None.
      second_per_grid_ts: [num_videos] seconds per temporal patch.
      audio_frames: [num_clips] log-mel frames of its audio clips, in order.
    """
    ids = np.asarray(input_ids_t).reshape(1, -1)
    given = lambda x: x is not None and np.size(x) > 0  # noqa: E731
    grid = lambda g: np.asarray(g).reshape(-1, 3) if given(g) else None  # noqa: E731
    frames = np.asarray(audio_frames).reshape(-1) if given(audio_frames) else None
    position_3bt, _ = omni_rope.get_rope_index(
        ids, None, image_grid_thw=grid(image_grid_thw), video_grid_thw=grid(video_grid_thw),
        video_second_per_grid=second_per_grid_ts if given(second_per_grid_ts) else None,
        audio_feature_lengths=frames, image_token_id=self.image_token_id,
        video_token_id=self.video_token_id, audio_token_id=self.audio_token_id,
        spatial_merge_size=self.spatial_merge_size,
        position_id_per_seconds=self.position_id_per_seconds,
        seconds_per_chunk=self.seconds_per_chunk)
    return position_3bt[:, 0]

  def audio_tokens(self, frames: int) -> int:
    """`<|AUDIO|>` placeholders of a clip of `frames` log-mel frames."""
    return int(feat_extract_output_lengths(int(frames))[1])

  def audio_layout(self, frames: int) -> dict[str, np.ndarray]:
    """One clip's `AudioLayout` index arrays, for the clip alone (frames from 0).

    Returns:
      {"frame_index": int32 [c, W], "frame_valid": bool [c, W],
      "token_valid": bool [c, N], "pool_index": int32 [p, 2]} for c windows
      of W = 2 * n_window frames, N = n_window tokens and p output tokens
      (c = p = 0 without audio). Pool indices count tokens of the clip's
      own [c * N] token grid.
    """
    w, n = 2 * self.n_window, self.n_window
    if not frames:
      return {"frame_index": np.zeros((0, w), np.int32), "frame_valid": np.zeros((0, w), bool),
              "token_valid": np.zeros((0, n), bool), "pool_index": np.zeros((0, 2), np.int32)}
    layout = build_audio_layout(self.n_window, feature_lens=[int(frames)])
    return {"frame_index": layout.frame_index_cw, "frame_valid": layout.frame_valid_cw,
            "token_valid": layout.token_valid_cn, "pool_index": layout.pool_index_p2}
