"""The thinker's traced row path (per-row padded media, host-computed layouts and
positions, `media_features` / `media_index`) against its flat path.

The batch is built the way training builds it: `OmniHostInputs` per example,
then `collate_media` pads patches and audio frames to buckets. The flat path
gets the processor's format (all images' patches, all videos', all clips as
[A, mel, frames] with a feature mask, host grids) and computes positions
itself, so a wrong layout offset, media index or position shows up.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import omni_rrm_jax as orj
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media_batching import DecodedMedia, MediaSpec, collate_media, example_arrays
from omni_rrm_jax.models.media_inputs import media_inputs
from omni_rrm_jax.models.omni import is_encoder_path
from tests.models.test_qwen2_5_omni import (AUDIO, IMAGE, MEL, PATCH_DIM, VIDEO, audio,
                                            audio_tokens, flax_model, hf_model, image, text,
                                            tokens_of, video)

PATCH_BUCKETS = (0, 64)
FRAME_BUCKETS = (0, 24, 48)  # windows of 8 frames: 6 windows, 12 outputs a row at 48
TOL = 1e-5


def spec_for(model) -> MediaSpec:
  cfg = MediaConfig(patch_size=2, merge_size=2, temporal_patch_size=2, feature_size=MEL)
  return MediaSpec("/nonexistent", cfg, model.cfg.host_inputs(), max_patches=64,
                   audio_frame_buckets=FRAME_BUCKETS)


def example(rng, ids, images=(), video_grid=None, seconds=None, frames=0):
  """(ids, DecodedMedia) with random patches and log-mel features."""
  grids = [*images] + ([video_grid] if video_grid else [])
  n = int(sum(np.prod(g) for g in grids))
  tokens = {IMAGE: [tokens_of(g) for g in images],
            VIDEO: [tokens_of(video_grid)] if video_grid else [],
            AUDIO: [audio_tokens(frames)] if frames else []}
  media = DecodedMedia(
      patches=rng.standard_normal((n, PATCH_DIM)).astype(np.float32),
      image_grid_thw=np.asarray(images, np.int64).reshape(-1, 3),
      video_grid_thw=np.asarray([video_grid] if video_grid else [], np.int64).reshape(-1, 3),
      second_per_grid_ts=np.asarray([seconds] if video_grid else [], np.float32),
      tokens=tokens, audio_features=rng.standard_normal((MEL, frames)).astype(np.float32))
  return list(ids), media


@functools.cache
def mixed():
  """(ids [B, T], mask, collated batch, examples) of four rows: an image and a
  clip of 37 frames, a video with a clip of 20, a clip of 9 alone, text only."""
  rng = np.random.default_rng(0)
  img, vid = (1, 4, 6), (3, 4, 4)
  rows = [
      example(rng, [1] + text(2, 40) + image(img) + text(2, 41) + audio(37) + text(3, 42),
              images=[img], frames=37),
      example(rng, [1] + text(3, 43) + video(vid) + text(1, 44) + audio(20) + text(2, 45),
              video_grid=vid, seconds=1.25, frames=20),
      example(rng, [1] + text(4, 46) + audio(9) + text(2, 47), frames=9),
      example(rng, [1] + text(6, 48)),
  ]
  spec = spec_for(flax_model())
  examples = [example_arrays(ids, media, spec) for ids, media in rows]
  length = max(len(ids) for ids, _ in rows) + 3  # some right padding on every row
  batch = collate_media(examples, length=length, patch_buckets=PATCH_BUCKETS, merge_unit=4,
                        audio_frame_buckets=FRAME_BUCKETS)
  ids = np.zeros((len(rows), length), np.int32)
  mask = np.zeros_like(ids)
  for i, (row, _) in enumerate(rows):
    ids[i, :len(row)], mask[i, :len(row)] = row, 1
  return ids, mask, batch, rows


def flat_kwargs(rows) -> dict:
  """The processor's format of the same media: items concatenated over the batch."""
  medias = [m for _, m in rows]
  grids = lambda key: np.concatenate([getattr(m, key) for m in medias])  # noqa: E731
  image_patches = [m.patches[:int(np.prod(m.image_grid_thw, -1).sum())] for m in medias]
  video_patches = [m.patches[int(np.prod(m.image_grid_thw, -1).sum()):] for m in medias]
  clips = [m.audio_features for m in medias if m.audio_frames]
  longest = max(c.shape[1] for c in clips)
  features = np.zeros((len(clips), MEL, longest), np.float32)
  fmask = np.zeros((len(clips), longest), np.int64)
  for i, c in enumerate(clips):
    features[i, :, :c.shape[1]], fmask[i, :c.shape[1]] = c, 1
  return dict(pixel_values=np.concatenate(image_patches), image_grid_thw=grids("image_grid_thw"),
              pixel_values_videos=np.concatenate(video_patches),
              video_grid_thw=grids("video_grid_thw"),
              video_second_per_grid=grids("second_per_grid_ts"), input_features=features,
              feature_attention_mask=fmask)


def row_logits(model, ids, mask, batch):
  graphdef, state = nnx.split(model)

  @jax.jit
  def forward(state, ids, mask, batch):
    m = nnx.merge(graphdef, state)
    return m(ids, attention_mask=mask, **media_inputs(m, batch)).logits

  return np.asarray(forward(state, ids, mask, batch))


def test_batch_shapes_follow_the_buckets():
  ids, _, batch, _ = mixed()
  b, t = ids.shape
  assert batch["vision_patches"].shape == (b, 64, PATCH_DIM)
  assert batch["input_features"].shape == (b, MEL, 48)
  assert batch["audio_frame_index"].shape == (b, 6, 8)
  assert batch["audio_token_valid"].shape == (b, 6, 4)
  assert batch["audio_pool_index"].shape == (b, 12, 2)
  np.testing.assert_array_equal(batch["feature_attention_mask"].sum(-1), [37, 20, 9, 0])
  # Audio placeholders read past the row's 16 (padded) vision tokens.
  index = batch["media_index"]
  np.testing.assert_array_equal(index[0][ids[0] == AUDIO], 16 + np.arange(audio_tokens(37)))
  np.testing.assert_array_equal(index[0][ids[0] == IMAGE], np.arange(6))
  np.testing.assert_array_equal(index[1][ids[1] == VIDEO], np.arange(12))
  assert (index[3] == -1).all()


def test_row_path_equals_the_flat_path():
  ids, mask, batch, rows = mixed()
  model = flax_model()
  out = row_logits(model, ids, mask, batch)
  ref = np.asarray(model(ids, attention_mask=mask, **flat_kwargs(rows)).logits)
  valid = mask.astype(bool)
  np.testing.assert_allclose(out[valid], ref[valid], atol=TOL, rtol=0)
  # The audio features matter: a row path with the first clip reversed in time differs.
  moved = dict(batch)
  feats = batch["input_features"].copy()
  feats[0, :, :37] = feats[0, :, :37][:, ::-1]
  moved["input_features"] = feats
  assert np.abs(row_logits(model, ids, mask, moved)[valid] - ref[valid]).max() > 100 * TOL


def _grads(model, ids, mask, batch):
  graphdef, params = nnx.split(model, nnx.Param)

  @jax.jit
  def grads(params, batch):
    def loss(params):
      m = nnx.merge(graphdef, params)
      logits = m(ids, attention_mask=mask, **media_inputs(m, batch)).logits
      return jnp.mean(jnp.where(mask[..., None] > 0, logits, 0) ** 2)
    return jax.grad(loss)(params)

  flat = nnx.to_flat_state(grads(params, batch))
  return [(p, np.asarray(v.get_value())) for p, v in flat]


def test_padding_windows_stay_finite_and_freezing_stops_encoder_gradients():
  ids, mask, batch, _ = mixed()
  live = _grads(flax_model(), ids, mask, batch)
  assert all(np.isfinite(g).all() for _, g in live)
  # Through the row path the loss reaches both encoders ...
  for tower in ("visual", "audio_tower"):
    assert sum(float(np.abs(g).sum()) for p, g in live if p[0] == tower) > 0, tower
  # ... unless they are frozen.
  frozen = _grads(orj.from_pretrained(hf_model()[1], freeze_encoders=True), ids, mask, batch)
  assert all(not g.any() for p, g in frozen if is_encoder_path(p))
  assert any(g.any() for p, g in frozen if not is_encoder_path(p))
