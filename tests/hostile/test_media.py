"""Media that decode to NaN / Inf are refused at decode time, like other bad
media, instead of turning every batch that holds them into a NaN loss."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from transformers import AutoTokenizer

from omni_rrm_jax.core.batch_contract import RM_BATCH
from omni_rrm_jax.data.media.audio import load_audio, process_audio
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media.encode import encode_media
from omni_rrm_jax.data.media.image import process_images
from omni_rrm_jax.data.media.video import process_video
from omni_rrm_jax.data.media_batching import MediaSpec, media_token_ids
from omni_rrm_jax.data.records import BadRecord, PreferenceRecord
from omni_rrm_jax.data.tokenize import INVALID_REASONS, ExampleEncoder
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.models.omni_config import OmniHostInputs
from tests.data.media.media_files import noise_image, tone, write_audio, write_image, write_mp4

RATE = 16000
CFG = MediaConfig(image_min_pixels=56 * 56, image_max_pixels=112 * 112,
                  video_min_pixels=56 * 56, video_max_pixels=56 * 56, video_max_frames=4,
                  audio_chunk_seconds=2)


def _bad_wav(path, value: float, subtype: str = "FLOAT"):
  samples = tone(0.5, RATE)
  samples[100:103] = value
  return write_audio(path, samples.astype(np.float64), RATE, subtype=subtype)


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_float_wav_with_non_finite_samples_is_refused(tmp_path, value, subtype):
  path = _bad_wav(tmp_path / "bad.wav", value, subtype)
  for decode in (load_audio, process_audio):
    with pytest.raises(BadRecord) as e:
      decode(path, CFG, name="audio/bad.wav")
    assert e.value.reason == "non-finite audio"
    assert e.value.message == "non-finite audio; audio/bad.wav: 3 NaN/Inf values"


def test_loud_but_finite_float_wav_is_kept(tmp_path):
  path = write_audio(tmp_path / "loud.wav", tone(0.5, RATE, amplitude=1e30), RATE,
                     subtype="FLOAT")
  features = process_audio(path, CFG)["input_features"]
  assert np.isfinite(features).all()


def test_non_finite_audio_is_bad_media_in_the_encoder(tmp_path, caplog):
  """In the pipeline the example is invalid as "bad media"; the log says why."""
  _bad_wav(tmp_path / "bad.wav", np.nan)
  write_audio(tmp_path / "good.wav", tone(0.5, RATE), RATE, subtype="FLOAT")
  tok_dir = tmp_path / "tok"
  train_tiny_tokenizer(["is the tone high or low? it is high. it is low."] * 20, tok_dir,
                       vocab_size=320)
  tok = AutoTokenizer.from_pretrained(str(tok_dir))
  ids = media_token_ids(tok)
  host = OmniHostInputs(image_token_id=ids["image"], video_token_id=ids["video"],
                        spatial_merge_size=2, window_size=56, patch_size=14,
                        temporal_patch_size=2, tokens_per_second=2.0,
                        audio_token_id=ids["audio"], position_id_per_seconds=2.0, n_window=50)
  spec = MediaSpec(str(tmp_path), CFG, host, max_patches=64, audio_frame_buckets=(0, 200))
  encoder = ExampleEncoder(tok, 256, RM_BATCH, media=spec)
  good = PreferenceRecord(id="good", prompt="is the tone high or low?", response_a="it is high.",
                          response_b="it is low.", label="A", modality="audio",
                          media={"images": [], "video": None, "audio": "good.wav"})
  bad = dataclasses.replace(good, id="bad", media=dict(good.media, audio="bad.wav"))
  assert encoder.encode(good)["valid"]
  with caplog.at_level(logging.WARNING):
    example = encoder.encode(bad)
  assert not example["valid"]
  assert INVALID_REASONS[int(example["invalid_reason"])] == "bad media"
  assert "non-finite audio; bad.wav: 3 NaN/Inf values" in caplog.text
  with pytest.raises(BadRecord, match="non-finite audio"):
    encode_media(bad, tmp_path, CFG)


def test_non_finite_image_and_video_pixels_are_refused(tmp_path):
  """A zero image_std (say, from a hostile preprocessor_config.json) makes Inf pixels."""
  cfg = dataclasses.replace(CFG, image_std=(0.0, 0.0, 0.0))
  image = write_image(tmp_path / "x.png", noise_image(64, 64))
  video = write_mp4(tmp_path / "x.mp4", num_frames=8, fps=4, height=64, width=64)
  with np.errstate(divide="ignore", invalid="ignore"):
    with pytest.raises(BadRecord) as e:
      process_images([image], cfg, names=["x.png"])
    assert e.value.reason == "non-finite image" and e.value.detail.startswith("x.png: ")
    with pytest.raises(BadRecord) as e:
      process_video(video, cfg, name="x.mp4")
    assert e.value.reason == "non-finite video" and e.value.detail.startswith("x.mp4: ")
  assert np.isfinite(process_images([image], CFG)["pixel_values"]).all()
