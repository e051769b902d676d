"""The Qwen2.5-Omni thinker's configuration, read from a transformers config."""

from __future__ import annotations

import copy
import dataclasses
import json

from omni_rrm_jax.models.audio import AudioEncoderConfig, audio_config_from_hf
from omni_rrm_jax.models.config import DecoderConfig, decoder_config_from_hf, resolve_dtype
from omni_rrm_jax.models.vision import VisionConfig, vision_config_from_hf

ARCHITECTURE = "Qwen2_5OmniThinkerForConditionalGeneration"
MODEL_TYPE = "qwen2_5_omni_thinker"
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
      towers), `architecture`, and `freeze_encoders` (default: the config's
      own `freeze_encoders` attribute if set, so
      `from_pretrained(path, freeze_encoders=True)` works, else False).
  """
  architecture = overrides.pop("architecture", ARCHITECTURE)
  freeze = bool(overrides.pop("freeze_encoders", getattr(hf, "freeze_encoders", False)))
  shared = {k: (resolve_dtype(v) if k.endswith("dtype") else v) for k, v in overrides.items()}
  unknown = set(shared) - {"dtype", "param_dtype", "remat"}
  if unknown:
    raise ValueError(f"unknown config overrides {sorted(unknown)}")
  t = hf.text_config
  text = decoder_config_from_hf(
      t, "qwen2", architecture=architecture,
      head_dim=getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads,
      # The thinker ties by its own flag; text_config's (True by default) is ignored.
      tie_word_embeddings=bool(hf.tie_word_embeddings), **shared)
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
