"""Video preprocessing on real MP4 files.

transformers' Qwen2-VL video processor needs torchvision, which is not
installable beside this torch, so it cannot run here. Instead: the sampled
frame indices are checked against hand-computed lists and against
`torch.arange(0, total, total / n).int()` (the expression transformers uses),
and the patches of every sampled frame against transformers' PIL image
processor run on the same decoded frame with the video pixel range.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as hf_image

from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media.video import frame_pixel_range, process_video, sample_frame_indices
from omni_rrm_jax.data.records import BadRecord
from tests.data.media.media_files import truncate, write_mp4, write_webm

# Keeps frames small: the resize and patch code is the same at any size.
CFG = MediaConfig(video_min_pixels=28 * 28 * 16, video_max_pixels=28 * 28 * 40)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
  """2 s at 20 fps, 90x124: a moving square."""
  return write_mp4(tmp_path_factory.mktemp("video") / "square.mp4", num_frames=40, fps=20)


@pytest.mark.parametrize("total,video_fps,fps,min_frames,max_frames,expected", [
    (40, 20.0, 2.0, 4, 768, [0, 10, 20, 30]),                 # 2 s at 2 fps = 4 frames
    (50, 25.0, 2.0, 4, 768, [0, 12, 25, 37]),                 # step 12.5, truncated
    (40, 20.0, 5.0, 4, 768, [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]),  # 2 s at 5 fps
    (10, 20.0, 2.0, 4, 768, [0, 2, 5, 7]),                    # 0.5 s: min_frames wins
    (300, 30.0, 2.0, 4, 6, [0, 50, 100, 150, 200, 250]),      # 20 wanted, max_frames 6
    (7, 10.0, 2.0, 4, 768, [0, 1, 3, 5]),                     # 1.4 -> min 4, step 1.75
    (3, 10.0, 2.0, 4, 768, [0, 1]),                           # fewer frames than min_frames
    (21, 10.0, 3.0, 4, 768, [0, 3, 7, 10, 14, 17]),           # 6.3 -> floor to 6
    # 17 / (17 / 14) is 14.000000000000002 in float64: torch.arange makes 15
    # indices, the last one (17) past the end, which the PyAV reader never sees.
    (17, 1.0, 0.85, 4, 768, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15]),
])
def test_sample_frame_indices_by_hand(total, video_fps, fps, min_frames, max_frames, expected):
  cfg = MediaConfig(video_fps=fps, video_min_frames=min_frames, video_max_frames=max_frames)
  np.testing.assert_array_equal(sample_frame_indices(total, video_fps, cfg), expected)


def test_sample_frame_indices_match_torch_arange():
  cfg_fps = (0.5, 1.0, 2.0, 3.3)
  for total in range(2, 400, 3):
    for video_fps in (7.0, 23.976, 25.0, 30.0):
      for fps in cfg_fps:
        cfg = MediaConfig(video_fps=fps, video_max_frames=64)
        ours = sample_frame_indices(total, video_fps, cfg)
        # The count transformers computes, then its own index expression.
        n = min(max(total / video_fps * fps, 4), (min(64, total) // 2) * 2, total)
        n = int(n // 2 * 2)
        ref = torch.arange(0, total, total / n).int().numpy()
        np.testing.assert_array_equal(ours, ref[ref < total])
        assert len(ours) == n


def test_too_short_video_raises():
  with pytest.raises(ValueError, match="fewer than temporal_patch_size"):
    sample_frame_indices(1, 25.0, MediaConfig())


def _decoded_frames(path):
  with av.open(str(path)) as container:
    return [frame.to_image() for frame in container.decode(video=0)]


def test_video_patches_match_image_processor_per_frame(mp4):
  out = process_video(mp4, CFG)
  indices = sample_frame_indices(40, 20.0, CFG)
  np.testing.assert_array_equal(indices, [0, 10, 20, 30])
  grid_t, grid_h, grid_w = out["video_grid_thw"][0]
  assert grid_t == len(indices) // 2
  assert out["pixel_values_videos"].dtype == np.float32
  assert out["pixel_values_videos"].shape == (grid_t * grid_h * grid_w, 3 * 2 * 14 * 14)
  np.testing.assert_allclose(out["second_per_grid_ts"], [1.0])  # 2 frames at 2 fps
  min_pixels, max_pixels = frame_pixel_range(len(indices), CFG)
  processor = hf_image.Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
  frames = _decoded_frames(mp4)
  ours_t = out["pixel_values_videos"].reshape(grid_t, grid_h * grid_w, 3, 2, 14, 14)
  for k, index in enumerate(indices):
    ref = processor(frames[index], return_tensors="np")
    np.testing.assert_array_equal(ref["image_grid_thw"], [[1, grid_h, grid_w]])
    ref_frame = ref["pixel_values"].reshape(grid_h * grid_w, 3, 2, 14, 14)[:, :, 0]
    np.testing.assert_allclose(ours_t[k // 2, :, :, k % 2], ref_frame, rtol=0, atol=1e-5)


def test_frames_show_the_sampled_moments(mp4):
  # The square moves right, so its column in the first patch row band must grow
  # with the sampled frame index: guards against decoding the wrong frames.
  out = process_video(mp4, CFG)
  _, grid_h, grid_w = out["video_grid_thw"][0]
  tiles = out["pixel_values_videos"].reshape(2, grid_h // 2, grid_w // 2, 2, 2, 3, 2, 14, 14)
  # Undo the block order -> [t, T, C, H, W] and find the yellow square's x centre.
  frames = tiles.transpose(0, 6, 5, 1, 3, 7, 2, 4, 8).reshape(2, 2, 3, grid_h * 14, grid_w * 14)
  red = frames[:, :, 0].reshape(4, grid_h * 14, grid_w * 14)
  centres = [np.nonzero(r.max(axis=0) > 1.0)[0].mean() for r in red]
  assert all(a < b for a, b in zip(centres, centres[1:])), centres


def test_limits_max_frames_and_max_seconds(mp4):
  cfg = MediaConfig(video_min_pixels=CFG.video_min_pixels, video_max_pixels=CFG.video_max_pixels,
                    video_fps=10.0, video_max_frames=6)
  out = process_video(mp4, cfg)
  assert out["video_grid_thw"][0][0] == 3  # 20 frames wanted, 6 kept
  np.testing.assert_allclose(out["second_per_grid_ts"], [2 / (6 / 40 * 20)], rtol=1e-6)
  cfg = MediaConfig(video_min_pixels=CFG.video_min_pixels, video_max_pixels=CFG.video_max_pixels,
                    max_video_seconds=1.0)
  out = process_video(mp4, cfg)
  # Only the first 20 frames (1 s) count: 2 frames at 2 fps -> min_frames 4 of 20.
  assert out["video_grid_thw"][0][0] == 2
  np.testing.assert_allclose(out["second_per_grid_ts"], [2 / (4 / 20 * 20)], rtol=1e-6)


def test_frame_pixels_capped(mp4):
  out = process_video(mp4, MediaConfig(video_min_pixels=3136, video_max_pixels=28 * 28 * 4))
  _, grid_h, grid_w = out["video_grid_thw"][0]
  assert grid_h * grid_w * 14 * 14 <= 28 * 28 * 4
  cfg = MediaConfig(video_min_pixels=3136, video_cap_pixels_per_frame=True, video_max_tokens=20)
  low, high = frame_pixel_range(4, cfg)
  assert (low, high) == (3136, max(int(20 * 28 * 28 * 0.9) * 2 // 4, int(3136 * 1.05)))


def test_bad_video_files_raise_bad_record(tmp_path, mp4):
  truncate(mp4, tmp_path / "cut.mp4", 0.5)
  (tmp_path / "zero.mp4").write_bytes(b"")
  (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
  for file in ("cut.mp4", "zero.mp4", "junk.mp4"):
    with pytest.raises(BadRecord) as e:
      process_video(tmp_path / file, CFG, name=f"vids/{file}")
    assert e.value.reason == "unreadable video"
    text = str(e.value)
    assert f"vids/{file}: " in text and "\n" not in text and str(tmp_path) not in text
  with pytest.raises(BadRecord, match="media file not found"):
    process_video(tmp_path / "missing.mp4", CFG, name="vids/missing.mp4")


def test_a_webm_cut_short_is_refused_not_read_as_a_shorter_video(tmp_path):
  # WebM stores a duration but no frame count, so frames are counted by demuxing.
  whole = write_webm(tmp_path / "whole.webm", num_frames=32, fps=8)
  out = process_video(whole, CFG)
  assert out["video_grid_thw"][0, 0] >= 1
  truncate(whole, tmp_path / "half.webm", 0.5)
  with pytest.raises(BadRecord, match=r"vids/half.webm: truncated: \d+ frames where the "
                                      r"container states 4.00 s"):
    process_video(tmp_path / "half.webm", CFG, name="vids/half.webm")
