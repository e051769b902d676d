"""encode_media: a record's media -> model keyword arrays, bad files -> BadRecord."""

from __future__ import annotations

import numpy as np
import pytest

from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media.encode import encode_media
from omni_rrm_jax.data.records import BadRecord, validate_record
from tests.data.media.media_files import noise_image, tone, write_audio, write_image, write_mp4

CFG = MediaConfig(image_max_pixels=28 * 28 * 64, video_min_pixels=28 * 28 * 16,
                  video_max_pixels=28 * 28 * 32, audio_chunk_seconds=30)


def _record(modality, media):
  return validate_record({"id": "r1", "prompt": "Which is better?", "response_a": "a",
                          "response_b": "b", "label": "A", "modality": modality,
                          "media": media})


@pytest.fixture
def media_root(tmp_path):
  (tmp_path / "imgs").mkdir()
  write_image(tmp_path / "imgs" / "a.png", noise_image(60, 80, "RGBA"))
  write_image(tmp_path / "imgs" / "b.jpg", noise_image(100, 50))
  write_mp4(tmp_path / "clip.mp4", num_frames=10, fps=10)
  write_audio(tmp_path / "say.wav", tone(0.5, 22050), 22050)
  (tmp_path / "imgs" / "zero.png").write_bytes(b"")
  return tmp_path


def test_every_modality(media_root):
  images = encode_media(_record("image", {"images": ["imgs/a.png", "imgs/b.jpg"]}), media_root, CFG)
  assert set(images) == {"pixel_values", "image_grid_thw"}
  assert images["image_grid_thw"].shape == (2, 3)
  assert len(images["pixel_values"]) == images["image_grid_thw"].prod(axis=1).sum()
  video = encode_media(_record("video", {"video": "clip.mp4"}), media_root, CFG)
  assert set(video) == {"pixel_values_videos", "video_grid_thw", "second_per_grid_ts"}
  assert len(video["pixel_values_videos"]) == video["video_grid_thw"].prod()
  audio = encode_media(_record("audio", {"audio": "say.wav"}), media_root, CFG)
  assert audio["input_features"].shape == (1, 128, 3000)
  assert audio["feature_attention_mask"].sum() == 50
  text = validate_record({"id": "t", "prompt": "p", "response_a": "a", "response_b": "b",
                          "label": "B", "modality": "text"})
  assert encode_media(text, media_root, CFG) == {}
  for out in (images, video, audio):
    assert all(isinstance(v, np.ndarray) for v in out.values())


@pytest.mark.parametrize("path,reason", [
    ("imgs/zero.png", "unreadable image"),
    ("imgs/missing.png", "media file not found"),
    ("../outside.png", "media path escapes media root"),
])
def test_bad_media_is_a_bad_record_naming_the_file(media_root, path, reason):
  with pytest.raises(BadRecord) as e:
    encode_media(_record("image", {"images": ["imgs/a.png", path]}), media_root, CFG)
  assert e.value.reason == reason
  assert path in str(e.value) and str(media_root) not in str(e.value)
