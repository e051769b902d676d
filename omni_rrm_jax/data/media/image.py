"""Images -> Qwen2-VL vision patches, with numpy and PIL only.

Reproduces transformers' PIL image processor for Qwen2-VL (the one Qwen2.5-VL
and Qwen2.5-Omni use) step for step, because the vision encoder was trained
on exactly these numbers:

  decode (PIL; EXIF orientation applied)
  -> RGB: transparency composited over white, everything else PIL's convert
  -> smart resize: sides become multiples of patch_size * merge_size, the area
     lands in [min_pixels, max_pixels], the aspect ratio is kept
  -> PIL resize of the uint8 image (bicubic by default)
  -> rescale in float64 (x / 255), then cast to float32
  -> normalise in float32 with the CLIP mean / std
  -> repeat to temporal_patch_size frames and cut into patches, each flattened
     as (channel, time, row, column), patches ordered so that every
     merge_size x merge_size block is contiguous.

Memory: an image whose header declares more than `max_decode_pixels` is not
decoded whole. A JPEG is decoded at the largest DCT reduction (1/2, 1/4, 1/8)
that still covers its resized size (transformers decodes these whole, so such
images differ from it by the reduction's own filtering); any other format is
refused with a `BadRecord`.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media.errors import (check_file, check_finite, decode_error,
                                            display_name)
from omni_rrm_jax.data.records import BadRecord

_MAX_ASPECT_RATIO = 200
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # these swap width and height


def smart_resize(height: int, width: int, factor: int, min_pixels: int,
                 max_pixels: int) -> tuple[int, int]:
  """The (height, width) the Qwen processors resize an image to.

  Each side is rounded to the nearest multiple of `factor` (Python's round,
  halves to even, as transformers does). If the area then exceeds
  `max_pixels`, both sides are scaled down by the same ratio and floored to
  multiples of `factor`; if it falls below `min_pixels`, scaled up and
  ceiled.

  Raises:
    ValueError: the longer side is more than 200 times the shorter.
  """
  if max(height, width) > _MAX_ASPECT_RATIO * min(height, width):
    raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.1f} is over "
                     f"{_MAX_ASPECT_RATIO}")
  resized_h = round(height / factor) * factor
  resized_w = round(width / factor) * factor
  if resized_h * resized_w > max_pixels:
    shrink = math.sqrt(height * width / max_pixels)
    resized_h = max(factor, math.floor(height / shrink / factor) * factor)
    resized_w = max(factor, math.floor(width / shrink / factor) * factor)
  elif resized_h * resized_w < min_pixels:
    grow = math.sqrt(min_pixels / (height * width))
    resized_h = math.ceil(height * grow / factor) * factor
    resized_w = math.ceil(width * grow / factor) * factor
  return resized_h, resized_w


_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
  """RGB with any transparency composited over white (as the Qwen processors do).

  A 16-bit greyscale PNG (PIL mode "I;16", or "I") is scaled to 8 bits first:
  PIL's own convert clips every value above 255, so all but the darkest
  pixels would turn white.
  """
  if image.mode in _WIDE_GREY_MODES:
    wide = np.asarray(image, dtype=np.float64)
    image = Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8), "L")
  if "A" in image.getbands() or image.info.get("transparency") is not None:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
  return image.convert("RGB")


def load_image(path: str | os.PathLike[str], cfg: MediaConfig, *,
               name: str | None = None) -> tuple[Image.Image, tuple[int, int]]:
  """Decodes an image file to upright RGB, within the decode budget.

  Args:
    path: the image file.
    cfg: supplies `max_decode_pixels` and the resize settings.
    name: how errors refer to the file (default: `path`).

  Returns:
    (the RGB image, (height, width) of the full-resolution upright image).
    The second differs from the image's own size only for an oversized JPEG
    decoded at reduced scale; resizing targets are computed from it.

  Raises:
    BadRecord: missing, empty, corrupt, truncated or oversized file.
  """
  name = display_name(path, name)
  path = check_file(path, "image", name)
  try:
    with Image.open(path) as image:
      width, height = image.size
      swapped = image.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSING_ORIENTATIONS
      upright_hw = (width, height) if swapped else (height, width)
      if width * height > cfg.max_decode_pixels:
        _draft_within_budget(image, upright_hw, swapped, cfg, name)
      image.load()
      upright = ImageOps.exif_transpose(image)
      return to_rgb(upright), upright_hw
  except BadRecord:
    raise
  except Exception as e:  # PIL raises many types on damaged files; all mean "skip it".
    raise decode_error("image", path, name, e) from None


def _draft_within_budget(image: Image.Image, upright_hw: tuple[int, int], swapped: bool,
                         cfg: MediaConfig, name: str) -> None:
  width, height = image.size
  too_large = BadRecord("image too large",
                        f"{name}: {width}x{height} pixels > max_decode_pixels "
                        f"{cfg.max_decode_pixels}")
  if image.format != "JPEG":
    raise too_large
  try:
    target_h, target_w = smart_resize(*upright_hw, cfg.factor, cfg.image_min_pixels,
                                      cfg.image_max_pixels)
  except ValueError as e:
    raise BadRecord("unusable image", f"{name}: {e}") from None
  # draft() picks the strongest reduction that stays at least this large, so
  # the final resize still only shrinks.
  image.draft(None, (target_h, target_w) if swapped else (target_w, target_h))
  if image.size[0] * image.size[1] > cfg.max_decode_pixels:
    raise too_large


def resize_and_normalize(image: Image.Image, height: int, width: int,
                         cfg: MediaConfig) -> np.ndarray:
  """Resizes an RGB image and normalises it as the processor does.

  Returns:
    float32 [3, height, width].
  """
  if image.size != (width, height):
    image = image.resize((width, height), resample=cfg.resample)
  pixels_hwc = np.asarray(image, dtype=np.uint8)
  return normalize(pixels_hwc, cfg).transpose(2, 0, 1)


def normalize(pixels_hwc: np.ndarray, cfg: MediaConfig) -> np.ndarray:
  """uint8 [..., 3] -> float32 (x * rescale_factor - mean) / std.

  The rescale is done in float64 and then cast, the normalisation in
  float32, the same operations and dtypes as transformers, so that results
  agree bit for bit.
  """
  scaled = (pixels_hwc.astype(np.float64) * cfg.rescale_factor).astype(np.float32)
  mean = np.asarray(cfg.image_mean, np.float32)
  std = np.asarray(cfg.image_std, np.float32)
  return (scaled - mean) / std


def patchify(frames_tchw: np.ndarray, cfg: MediaConfig) -> tuple[np.ndarray, tuple[int, int, int]]:
  """Cuts frames into flattened vision patches in the encoder's order.

  Args:
    frames_tchw: float32 [T, C, H, W]; H and W multiples of `cfg.factor`. T is
      padded to a multiple of `temporal_patch_size` by repeating the last
      frame (so a single image becomes `temporal_patch_size` copies).
    cfg: patch sizes.

  Returns:
    (patches [grid_t * grid_h * grid_w, C * temporal * patch * patch],
     (grid_t, grid_h, grid_w)).
  """
  p, m, tp = cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size
  num_frames, channels, height, width = frames_tchw.shape
  if height % (p * m) or width % (p * m):
    raise ValueError(f"frame {height}x{width} is not a multiple of {p * m}")
  if pad := -num_frames % tp:
    frames_tchw = np.concatenate([frames_tchw, np.repeat(frames_tchw[-1:], pad, axis=0)])
  grid_t, grid_h, grid_w = frames_tchw.shape[0] // tp, height // p, width // p
  x = frames_tchw.reshape(grid_t, tp, channels, grid_h // m, m, p, grid_w // m, m, p)
  # -> (t, block row, block col, row in block, col in block, C, time, py, px)
  x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
  patches = x.reshape(grid_t * grid_h * grid_w, channels * tp * p * p)
  return np.ascontiguousarray(patches, dtype=np.float32), (grid_t, grid_h, grid_w)


def image_patches(image: Image.Image, cfg: MediaConfig, *,
                  source_hw: tuple[int, int] | None = None,
                  name: str = "image") -> tuple[np.ndarray, tuple[int, int, int]]:
  """One decoded RGB image -> (patches, (1, grid_h, grid_w)).

  Args:
    image: an RGB PIL image.
    cfg: processor settings; the image pixel range applies.
    source_hw: the size the resize target is computed from (default: the
      image's own size).
    name: how errors refer to the image.
  """
  height, width = source_hw or (image.height, image.width)
  try:
    target_h, target_w = smart_resize(height, width, cfg.factor, cfg.image_min_pixels,
                                      cfg.image_max_pixels)
  except ValueError as e:
    raise BadRecord("unusable image", f"{name}: {e}") from None
  frame_chw = resize_and_normalize(image, target_h, target_w, cfg)
  return patchify(frame_chw[None], cfg)


def process_images(paths: Sequence[str | os.PathLike[str]], cfg: MediaConfig, *,
                   names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
  """Image files -> the vision inputs of a Qwen2.5-VL / Omni model.

  Args:
    paths: one or more image files, in prompt order.
    cfg: processor settings and limits.
    names: how errors refer to each file (default: the paths).

  Returns:
    {"pixel_values": float32 [sum of patches, 3 * temporal * patch**2],
     "image_grid_thw": int64 [len(paths), 3]}.

  Raises:
    BadRecord: any file cannot be used, or its pixel values are not finite
      (e.g. normalised with a zero `image_std`).
  """
  if not paths:
    raise ValueError("process_images needs at least one image")
  names = list(names) if names is not None else [str(p) for p in paths]
  all_patches, grids = [], []
  for path, name in zip(paths, names, strict=True):
    image, source_hw = load_image(path, cfg, name=name)
    patches, grid = image_patches(image, cfg, source_hw=source_hw, name=name)
    all_patches.append(check_finite(patches, "image", name))
    grids.append(grid)
  return {"pixel_values": np.concatenate(all_patches, axis=0),
          "image_grid_thw": np.asarray(grids, dtype=np.int64)}
