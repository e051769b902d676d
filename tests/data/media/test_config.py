"""MediaConfig defaults and reading Hugging Face preprocessor configs."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from omni_rrm_jax.data.media.config import OPENAI_CLIP_MEAN, MediaConfig

# Qwen/Qwen2.5-Omni-7B's preprocessor_config.json.
OMNI_7B = {
    "chunk_length": 300, "dither": 0.0, "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 128, "hop_length": 160,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "Qwen2VLImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "max_pixels": 12845056, "merge_size": 2, "min_pixels": 3136, "n_fft": 400,
    "n_samples": 4800000, "nb_max_frames": 30000, "padding_side": "right",
    "padding_value": 0.0, "patch_size": 14, "processor_class": "Qwen2_5OmniProcessor",
    "return_attention_mask": True, "sampling_rate": 16000, "temporal_patch_size": 2,
}


def test_defaults_are_the_released_checkpoints():
  cfg = MediaConfig()
  assert MediaConfig.from_preprocessor_config(OMNI_7B) == cfg
  assert cfg.factor == 28 and cfg.image_mean == OPENAI_CLIP_MEAN
  assert (cfg.video_min_pixels, cfg.video_max_pixels) == (128 * 28 * 28, 768 * 28 * 28)
  assert (cfg.video_fps, cfg.video_min_frames, cfg.video_max_frames) == (2.0, 4, 768)
  assert cfg.max_audio_samples == cfg.audio_chunk_samples == 300 * 16000


def test_size_dict_video_config_and_overrides():
  cfg = MediaConfig.from_preprocessor_config(
      {"size": {"shortest_edge": 1000, "longest_edge": 200000}, "chunk_length": 30,
       "resample": 2},
      video_config={"size": {"shortest_edge": 4000, "longest_edge": 90000}, "fps": 1.0,
                    "max_frames": 32},
      max_audio_seconds=10.0)
  assert (cfg.image_min_pixels, cfg.image_max_pixels) == (1000, 200000)
  assert (cfg.video_min_pixels, cfg.video_max_pixels) == (4000, 90000)
  assert (cfg.video_fps, cfg.video_max_frames, cfg.resample) == (1.0, 32, 2)
  assert cfg.max_audio_samples == 160000 and cfg.audio_chunk_samples == 480000


@pytest.mark.parametrize("config,match", [
    ({"do_normalize": False}, "do_normalize"),
    ({"dither": 1e-4}, "dither"),
    ({"min_pixels": 10_000, "max_pixels": 5_000}, "image_min_pixels"),
])
def test_unsupported_or_inconsistent_settings(config, match):
  with pytest.raises(ValueError, match=match):
    MediaConfig.from_preprocessor_config(config)


def test_config_is_frozen():
  with pytest.raises(Exception):
    MediaConfig().patch_size = 16


def test_media_code_imports_no_torch_jax_or_transformers():
  media = Path(__file__).resolve().parents[3] / "omni_rrm_jax" / "data" / "media"
  forbidden = ("torch", "torchvision", "jax", "flax", "transformers", "omni_rrm_jax.models")
  files = sorted(media.glob("*.py"))
  assert len(files) >= 6, media
  for path in files:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import)
               else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
      for name in names:
        assert not any(name == f or name.startswith(f + ".") for f in forbidden), (path.name, name)


def test_processor_files_round_trip_and_load_in_transformers(tmp_path):
  import json

  from PIL import Image
  from transformers import WhisperFeatureExtractor
  from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as hf_image

  from omni_rrm_jax.data.media.image import process_images

  # Settings unlike the defaults in every field the files carry.
  cfg = MediaConfig(image_min_pixels=28 * 28 * 2, image_max_pixels=112 * 112,
                    video_min_pixels=28 * 28, video_max_pixels=56 * 56, video_fps=1.5,
                    video_min_frames=2, video_max_frames=6, audio_chunk_seconds=2,
                    image_mean=(0.5, 0.4, 0.3), image_std=(0.2, 0.25, 0.3))
  files = cfg.to_preprocessor_configs()
  assert sorted(files) == ["preprocessor_config.json", "video_preprocessor_config.json"]
  for name, content in files.items():
    (tmp_path / name).write_text(json.dumps(content))
  back = MediaConfig.from_preprocessor_config(
      json.loads((tmp_path / "preprocessor_config.json").read_text()),
      json.loads((tmp_path / "video_preprocessor_config.json").read_text()))
  assert back == cfg
  without_audio = cfg.to_preprocessor_configs(audio=False)["preprocessor_config.json"]
  assert "chunk_length" not in without_audio and without_audio["max_pixels"] == 112 * 112

  # transformers' processors read the same settings from the folder ...
  extractor = WhisperFeatureExtractor.from_pretrained(str(tmp_path))
  assert (extractor.chunk_length, extractor.n_samples, extractor.feature_size) == (
      2, 32000, 128)
  processor = hf_image.Qwen2VLImageProcessorPil.from_pretrained(str(tmp_path))
  # ... and preprocess an image as we do.
  rng = np.random.default_rng(0)
  path = tmp_path / "img.png"
  Image.fromarray(rng.integers(0, 256, (300, 200, 3), np.uint8)).save(path)
  ours = process_images([str(path)], cfg)
  with Image.open(path) as image:
    theirs = processor(image.convert("RGB"), return_tensors="np")
  np.testing.assert_array_equal(ours["image_grid_thw"], theirs["image_grid_thw"])
  assert tuple(ours["image_grid_thw"][0]) != tuple(
      process_images([str(path)], MediaConfig())["image_grid_thw"][0])  # the limits mattered
  np.testing.assert_allclose(ours["pixel_values"], theirs["pixel_values"], rtol=0, atol=1e-5)
