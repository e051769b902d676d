"""Image preprocessing against transformers' PIL Qwen2-VL image processor, on real files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps
from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as hf_image

from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media.image import load_image, patchify, process_images, smart_resize
from omni_rrm_jax.data.records import BadRecord
from tests.data.media.media_files import noise_image, truncate, write_image

# A small pixel budget keeps the tests fast; the code path is the same.
CFG = MediaConfig(image_max_pixels=28 * 28 * 256)


def _reference(images, cfg=CFG):
  processor = hf_image.Qwen2VLImageProcessorPil(min_pixels=cfg.image_min_pixels,
                                                max_pixels=cfg.image_max_pixels)
  return processor(images, return_tensors="np")


def _open_upright(path):
  # What transformers' load_image hands the processor for a path.
  with Image.open(path) as image:
    return ImageOps.exif_transpose(image)


def test_smart_resize_matches_transformers_rounding():
  sizes = [(h, w) for h in (1, 13, 14, 27, 28, 42, 56, 97, 223, 480, 1080, 4321)
           for w in (1, 15, 28, 29, 70, 250, 641, 1920)]
  for h, w in sizes:
    for low, high in ((3136, 28 * 28 * 256), (3136, 12845056), (128 * 28 * 28, 768 * 28 * 28)):
      if max(h, w) / min(h, w) > 200:
        with pytest.raises(ValueError, match="aspect ratio"):
          smart_resize(h, w, 28, low, high)
        continue
      assert smart_resize(h, w, 28, low, high) == hf_image.smart_resize(h, w, 28, low, high)


@pytest.mark.parametrize("height,width,mode,fmt", [
    (37, 53, "RGB", "png"),        # odd, below min_pixels (upscaled)
    (224, 224, "RGB", "png"),
    (481, 641, "RGBA", "png"),     # alpha composited over white; above max_pixels
    (101, 999, "L", "png"),        # grayscale, wide
    (300, 200, "LA", "png"),       # grayscale + alpha
    (64, 90, "P", "png"),          # palette
    (333, 517, "RGB", "jpeg"),
    (250, 77, "L", "jpeg"),
])
def test_image_parity_with_transformers(tmp_path, height, width, mode, fmt):
  path = write_image(tmp_path / f"img.{fmt}", noise_image(height, width, mode))
  ours = process_images([path], CFG)
  ref = _reference(_open_upright(path))
  np.testing.assert_array_equal(ours["image_grid_thw"], ref["image_grid_thw"])
  assert ours["pixel_values"].dtype == np.float32
  assert ours["pixel_values"].shape == ref["pixel_values"].shape
  np.testing.assert_allclose(ours["pixel_values"], ref["pixel_values"], rtol=0, atol=1e-5)


def test_palette_transparency_and_several_images(tmp_path):
  palette = noise_image(40, 60, "P", seed=1)
  first = write_image(tmp_path / "p.png", palette, transparency=3)
  second = write_image(tmp_path / "q.jpg", noise_image(500, 380, seed=2))
  third = write_image(tmp_path / "r.png", noise_image(29, 400, "RGBA", seed=3))
  ours = process_images([first, second, third], CFG)
  ref = _reference([_open_upright(p) for p in (first, second, third)])
  assert ours["image_grid_thw"].shape == (3, 3)
  np.testing.assert_array_equal(ours["image_grid_thw"], ref["image_grid_thw"])
  np.testing.assert_allclose(ours["pixel_values"], ref["pixel_values"], rtol=0, atol=1e-5)


def test_exif_orientation_is_applied(tmp_path):
  image = noise_image(120, 200, seed=4)
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise on display
  path = write_image(tmp_path / "rot.jpg", image, exif=exif)
  decoded, source_hw = load_image(path, CFG)
  assert decoded.size == (120, 200) and source_hw == (200, 120)
  ours = process_images([path], CFG)
  ref = _reference(_open_upright(path))
  np.testing.assert_array_equal(ours["image_grid_thw"], ref["image_grid_thw"])
  np.testing.assert_allclose(ours["pixel_values"], ref["pixel_values"], rtol=0, atol=1e-5)


def test_patch_layout_by_hand():
  # One 56x56 frame: 4x4 patches of 14, merged in 2x2 blocks. Patch k of the
  # output must be block-major, row-major inside a block, with (C, T, y, x)
  # flattened.
  cfg = MediaConfig()
  frame_chw = np.random.default_rng(0).standard_normal((3, 56, 56)).astype(np.float32)
  patches, grid = patchify(frame_chw[None], cfg)
  assert grid == (1, 4, 4) and patches.shape == (16, 3 * 2 * 14 * 14)
  k = 0
  for block_row in range(2):
    for block_col in range(2):
      for row in range(2):
        for col in range(2):
          y, x = (2 * block_row + row) * 14, (2 * block_col + col) * 14
          tile = frame_chw[:, y:y + 14, x:x + 14]
          expected = np.stack([tile, tile], axis=1).reshape(-1)  # (C, T, py, px)
          np.testing.assert_array_equal(patches[k], expected)
          k += 1


def test_huge_image_is_resized_within_max_pixels(tmp_path):
  gradient = np.linspace(0, 255, 2400 * 1800, dtype=np.float32).reshape(1800, 2400)
  path = write_image(tmp_path / "big.png", Image.fromarray(gradient.astype(np.uint8)))
  cfg = MediaConfig(image_max_pixels=28 * 28 * 64)
  out = process_images([path], cfg)
  t, h, w = out["image_grid_thw"][0]
  assert t == 1 and h * w * 14 * 14 <= cfg.image_max_pixels
  assert out["pixel_values"].shape == (h * w, 1176)


def test_oversized_jpeg_is_decoded_at_reduced_scale(tmp_path):
  path = write_image(tmp_path / "big.jpg", noise_image(1600, 2000, seed=5), quality=90)
  cfg = MediaConfig(image_max_pixels=28 * 28 * 64, max_decode_pixels=1_000_000)
  image, source_hw = load_image(path, cfg)
  assert source_hw == (1600, 2000)
  assert image.width * image.height <= cfg.max_decode_pixels
  out = process_images([path], cfg)
  # The grid is that of the full-size image, whatever scale it was decoded at.
  expected_h, expected_w = smart_resize(1600, 2000, 28, cfg.image_min_pixels, cfg.image_max_pixels)
  np.testing.assert_array_equal(out["image_grid_thw"], [[1, expected_h // 14, expected_w // 14]])


def test_oversized_png_is_refused(tmp_path):
  path = write_image(tmp_path / "big.png", noise_image(1200, 1000, seed=6))
  with pytest.raises(BadRecord, match="image too large") as e:
    process_images([path], MediaConfig(max_decode_pixels=1_000_000), names=["imgs/big.png"])
  assert "imgs/big.png: 1000x1200 pixels" in str(e.value)


def _assert_one_line(error: BadRecord, reason: str, name: str):
  text = str(error)
  assert error.reason == reason
  assert "\n" not in text and name in text and "Traceback" not in text
  assert len(text) < 250


def test_bad_image_files_raise_bad_record(tmp_path):
  good = write_image(tmp_path / "ok.png", noise_image(200, 300, seed=7))
  jpeg = write_image(tmp_path / "ok.jpg", noise_image(200, 300, seed=7))
  (tmp_path / "zero.png").write_bytes(b"")
  (tmp_path / "junk.png").write_bytes(np.random.default_rng(0).bytes(777))
  truncate(good, tmp_path / "cut.png", 0.5)
  truncate(jpeg, tmp_path / "cut.jpg", 0.5)
  cases = {"zero.png": "empty file", "junk.png": "cannot identify image file",
           "cut.png": "truncated", "cut.jpg": "truncated"}
  for file, detail in cases.items():
    with pytest.raises(BadRecord) as e:
      process_images([tmp_path / file], CFG, names=[f"imgs/{file}"])
    _assert_one_line(e.value, "unreadable image", f"imgs/{file}")
    assert detail in str(e.value)
    assert str(tmp_path) not in str(e.value)
  with pytest.raises(BadRecord) as e:
    process_images([tmp_path / "missing.png"], CFG, names=["imgs/missing.png"])
  _assert_one_line(e.value, "media file not found", "imgs/missing.png")


def test_extreme_aspect_ratio_is_a_bad_record(tmp_path):
  path = write_image(tmp_path / "strip.png", noise_image(2, 500))
  with pytest.raises(BadRecord, match="unusable image") as e:
    process_images([path], CFG, names=["strip.png"])
  assert "aspect ratio" in str(e.value)


def test_16_bit_greyscale_png_keeps_its_tones(tmp_path):
  from omni_rrm_jax.data.media.image import to_rgb

  wide = np.linspace(0, 65535, 56 * 84).reshape(56, 84).astype(np.uint16)
  path = tmp_path / "wide.png"
  Image.fromarray(wide).save(path)
  with Image.open(path) as image:
    assert image.mode.startswith("I")
    rgb = np.asarray(to_rgb(image))
  expected = np.round(wide / 257.0).astype(np.uint8)
  assert rgb.shape == (56, 84, 3)
  np.testing.assert_array_equal(rgb[..., 0], expected)
  np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
  assert 100 < rgb.mean() < 155  # a full gradient, not white
