"""Packed multimodal rows: each segment keeps its own M-RoPE ids, and a row's media
layout is that of its items concatenated (so the towers never mix two items)."""

import numpy as np
import pytest

from omni_rrm_jax.core.batch_contract import HOST_ONLY, RM_BATCH
from omni_rrm_jax.data.packing import MediaPacking, collate_packed, packed_needs, PackSpec
from omni_rrm_jax.models.audio_layout import build_audio_layout
from omni_rrm_jax.models.omni_config import OmniHostInputs
from omni_rrm_jax.models.qwen2_5_vl import HostInputs
from tests.train.packed_media_rows import (AUDIO, FRAME_BUCKETS, IMAGE, MEL, PATCH_BUCKETS,
                                           VIDEO, rm_examples)

SEGMENTS = 4
LENGTH = 160
HOSTS = {
    "vl": HostInputs(image_token_id=IMAGE, video_token_id=VIDEO, spatial_merge_size=2,
                     window_size=8, patch_size=2, temporal_patch_size=2, tokens_per_second=2.0),
    "omni": OmniHostInputs(image_token_id=IMAGE, video_token_id=VIDEO, spatial_merge_size=2,
                           window_size=8, patch_size=2, temporal_patch_size=2,
                           tokens_per_second=4.0, audio_token_id=AUDIO,
                           position_id_per_seconds=4.0, seconds_per_chunk=1.0, n_window=4,
                           num_mel_bins=MEL),
}


def _pack(family: str, patch_buckets=PATCH_BUCKETS):
  host = HOSTS[family]
  examples = rm_examples(host)
  frames = FRAME_BUCKETS if family == "omni" else ()
  media = MediaPacking(patch_buckets, 4, frames)
  needs = packed_needs(examples, RM_BATCH, PackSpec(LENGTH, SEGMENTS), media)
  batch = collate_packed(examples, kind=RM_BATCH, num_rows=int(needs[0]), length=LENGTH,
                         max_segments=SEGMENTS, pad_id=0, media=media, global_needs=needs)
  return host, examples, batch


def _segments(batch, examples, r):
  """(example, first slot) of each segment of row r, in order."""
  out = []
  for j in range(SEGMENTS):
    if batch["index"][r, j] < 0:
      continue
    slots = np.flatnonzero(batch["chosen_segment_ids"][r] == j + 1)
    assert slots[0] == np.flatnonzero(batch["rejected_segment_ids"][r] == j + 1)[0]
    out.append((examples[batch["index"][r, j]], int(slots[0])))
  return out


@pytest.mark.parametrize("family", ["vl", "omni"])
def test_each_segment_keeps_the_positions_and_media_it_has_alone(family):
  host, examples, batch = _pack(family)
  merged = lambda ex: len(ex["vision_unperm"])  # noqa: E731
  vision_tokens = batch["vision_unperm"].shape[1]
  for r in range(len(batch["index"])):
    m0 = p0 = 0
    grids = []
    for ex, start in _segments(batch, examples, r):
      pos = ex["position_ids"]
      np.testing.assert_array_equal(batch["position_ids"][r, :, start:start + pos.shape[1]], pos)
      got = batch["media_index"][r, start:start + pos.shape[1]]
      want = np.where(ex["media_index"] >= 0, ex["media_index"] + m0, -1)
      if family == "omni":
        audio = ex["audio_index"]
        want = np.where(audio >= 0, vision_tokens + p0 + audio, want)
        p0 += len(ex["audio_pool_index"])
      np.testing.assert_array_equal(got, want)
      m0 += merged(ex)
      grids.append(ex["vision_grid_thw"])
    # The row's vision layout is that of its items' grids, one after another.
    grids = np.concatenate(grids).reshape(-1, 3)
    np.testing.assert_array_equal(batch["vision_grid_thw"][r, :len(grids)], grids)
    want = host.vision_layout(grids)
    n = len(want["perm"])
    for field in ("perm", "position", "frame", "window"):
      np.testing.assert_array_equal(batch[f"vision_{field}"][r, :n], want[field], err_msg=field)
    np.testing.assert_array_equal(batch["vision_unperm"][r, :n // 4], want["unperm"])
    assert (batch["vision_frame"][r, n:] == -1).all()


def test_a_rows_clips_keep_their_own_windows():
  _, examples, batch = _pack("omni")
  w = 8
  # Buckets of 72 frames: 9 windows, plus one per further clip a row may hold.
  assert batch["audio_frame_index"].shape[1:] == (72 // w + SEGMENTS - 1, w)
  several = 0
  for r in range(len(batch["index"])):
    clips = [ex["input_features"].shape[1] for ex, _ in _segments(batch, examples, r)
             if ex["input_features"].shape[1]]
    if not clips:
      assert not batch["feature_attention_mask"][r].any()
      continue
    several += len(clips) > 1
    want = build_audio_layout(4, feature_lens=clips)
    c, p = len(want.frame_index_cw), len(want.pool_index_p2)
    np.testing.assert_array_equal(batch["audio_frame_index"][r, :c], want.frame_index_cw)
    np.testing.assert_array_equal(batch["audio_frame_valid"][r, :c], want.frame_valid_cw)
    np.testing.assert_array_equal(batch["audio_token_valid"][r, :c], want.token_valid_cn)
    np.testing.assert_array_equal(batch["audio_pool_index"][r, :p], want.pool_index_p2)
    assert not batch["audio_frame_valid"][r, c:].any()
    assert batch["feature_attention_mask"][r].sum() == sum(clips)
  assert several, "no row holds two clips"


def test_rows_hold_at_most_the_largest_media_bucket():
  _, examples, batch = _pack("vl", patch_buckets=(0, 32))
  assert batch["vision_patches"].shape[1] == 32
  _, _, roomy = _pack("vl")
  assert len(batch["index"]) > len(roomy["index"])  # the patch cap opened rows
  with pytest.raises(ValueError, match="media .* do not fit a packed row"):
    _pack("vl", patch_buckets=(0, 16))


def test_a_share_of_filler_alone_still_builds_the_media_keys():
  # Another process's share of the last global batch may hold only filler examples.
  _, examples, batch = _pack("omni")
  filler = [dict(ex, index=-1, valid=False) for ex in examples[:2]]
  media = MediaPacking(PATCH_BUCKETS, 4, FRAME_BUCKETS)
  alone = collate_packed(filler, kind=RM_BATCH, num_rows=len(batch["index"]), length=LENGTH,
                         max_segments=SEGMENTS, pad_id=0, media=media,
                         global_needs=packed_needs(examples, RM_BATCH,
                                                   PackSpec(LENGTH, SEGMENTS), media))
  shapes = lambda b: {k: v.shape for k, v in b.items() if k not in HOST_ONLY}  # noqa: E731
  assert shapes(alone) == shapes(batch)
  assert not alone["valid"].any() and (alone["media_index"] == -1).all()
