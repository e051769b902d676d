"""Qwen2.5-Omni thinker: transformers parity (fp32, 1e-4), positions, export, frozen encoders.

Both models get the same inputs, built here directly (random patches of the
flattened size C*T*P*P, random log-mel features), so nothing depends on media
preprocessing. Token layouts follow the processor: every item sits between
start / end tokens, and a video with its own audio is interleaved chunk by
chunk with the processor's own chunking function. q/k weights are scaled up
(as in hf_fixtures) so attention is sharp enough for a wrong position, window
or mask to show.
"""

import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import omni_rrm_jax as orj
from omni_rrm_jax.models.architectures import ARCHITECTURES
from omni_rrm_jax.models.audio_layout import feat_extract_output_lengths
from omni_rrm_jax.models.omni import encoder_param_labels, is_encoder_path, rope_index
from omni_rrm_jax.models.omni_config import ARCHITECTURE

TOL = 1e-4
VOCAB, PAD = 101, 0
IMAGE, VIDEO, VSTART, VEND, AUDIO, ASTART, AEND = 90, 91, 92, 93, 94, 95, 96
PPS, SECONDS_PER_CHUNK = 4, 1  # chunks of 4 temporal ids
MEL = 16
PATCH_DIM = 3 * 2 * 2 * 2
TEXT_CONFIG = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                   pad_token_id=PAD, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                      "mrope_section": [1, 1, 2]})
# window_size / merge / patch = 2 merged tokens a window side.
VISION_CONFIG = dict(depth=2, hidden_size=32, intermediate_size=40, num_heads=4, in_channels=3,
                     patch_size=2, temporal_patch_size=2, spatial_merge_size=2, window_size=8,
                     out_hidden_size=32, fullatt_block_indexes=[1])
# n_window=4: windows of 8 frames, so the clips below span 1-5 windows.
AUDIO_CONFIG = dict(num_mel_bins=MEL, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                    encoder_ffn_dim=48, n_window=4, output_dim=32, max_source_positions=64)

assert ARCHITECTURE in ARCHITECTURES  # registered by models/architectures.py


@functools.cache
def hf_model():
  """(torch model, saved folder) of a tiny random thinker."""
  import torch
  import transformers
  from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni as hf_cfg
  torch.manual_seed(26)
  config = hf_cfg.Qwen2_5OmniThinkerConfig(
      text_config=TEXT_CONFIG, vision_config=VISION_CONFIG, audio_config=AUDIO_CONFIG,
      image_token_index=IMAGE, video_token_index=VIDEO, audio_token_index=AUDIO,
      audio_start_token_id=ASTART, audio_end_token_id=AEND, position_id_per_seconds=PPS,
      seconds_per_chunk=SECONDS_PER_CHUNK,
      # Not a thinker config field, but its get_rope_index reads it.
      vision_start_token_id=VSTART)
  model = transformers.Qwen2_5OmniThinkerForConditionalGeneration(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.startswith(("model.visual.", "model.audio_tower.")):
        # Unit-scale encoders (as in test_audio_encoder), so their outputs
        # weigh on the logits as much as the text embeddings do.
        if "norm" in name or "ln_" in name:
          p.copy_(1.0 + 0.2 * torch.randn_like(p))
        elif name.endswith(".bias"):
          p.copy_(0.2 * torch.randn_like(p))
        else:
          p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
        if name.endswith(("q_proj.weight", "k_proj.weight", "attn.q.weight", "attn.k.weight")):
          p.mul_(3.0)
        continue
      if "norm" in name or name.endswith(".bias"):
        p.add_(0.1 * torch.randn_like(p))
      if name.endswith(("q_proj.weight", "k_proj.weight")):
        p.mul_(15.0)
  folder = os.path.join(tempfile.mkdtemp(prefix="omni_rrm_qwen2_5_omni_"), "model")
  model.save_pretrained(folder)
  return model, folder


@functools.cache
def flax_model():
  return orj.from_pretrained(hf_model()[1])


def tokens_of(grid, merge=2):
  t, h, w = grid
  return t * h * w // merge ** 2


def audio_tokens(frames):
  return int(feat_extract_output_lengths(frames)[1])


def image(grid):
  return [VSTART] + [IMAGE] * tokens_of(grid) + [VEND]


def video(grid):
  return [VSTART] + [VIDEO] * tokens_of(grid) + [VEND]


def audio(frames):
  return [ASTART] + [AUDIO] * audio_tokens(frames) + [AEND]


def video_with_audio(grid, seconds, frames):
  """The processor's layout of a video and its audio (`replace_video_with_audio_token`)."""
  from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import Qwen2_5OmniProcessor
  chunked = functools.partial(Qwen2_5OmniProcessor.get_chunked_index, None,
                              tokens_per_chunk=int(PPS * SECONDS_PER_CHUNK))
  t, h, w = grid
  frame_of_token = np.repeat(np.arange(t), h * w // 4)
  video_chunks = chunked(frame_of_token * seconds * PPS)
  audio_chunks = chunked(np.arange(audio_tokens(frames)))
  out = [VSTART, ASTART]
  for j in range(max(len(video_chunks), len(audio_chunks))):
    for chunks, token in ((video_chunks, VIDEO), (audio_chunks, AUDIO)):
      if j < len(chunks):
        out += [token] * (chunks[j][1] - chunks[j][0])
  return out + [AEND, VEND]


def text(n, seed):
  return list(np.random.RandomState(seed).randint(3, 80, size=n))


def batch(rows, side="left"):
  """Pads token lists to one length: (ids [B, T], mask [B, T])."""
  length = max(map(len, rows))
  ids = np.full((len(rows), length), PAD, np.int64)
  mask = np.zeros_like(ids)
  for i, row in enumerate(rows):
    span = slice(length - len(row), length) if side == "left" else slice(0, len(row))
    ids[i, span], mask[i, span] = row, 1
  return ids, mask


def patches(grids, seed):
  n = int(sum(np.prod(g) for g in grids))
  return np.random.RandomState(seed).randn(n, PATCH_DIM).astype(np.float32)


def clips(frames, seed):
  """[A, MEL, max frames] random features (zero past each clip) and the mask [A, max]."""
  length = max(frames)
  mask = (np.arange(length)[None, :] < np.asarray(frames)[:, None]).astype(np.int64)
  feats = np.random.RandomState(seed).randn(len(frames), MEL, length).astype(np.float32)
  return feats * mask[:, None, :], mask


def media_kwargs(images=(), videos=(), seconds=None, audio_frames=(), seed=0):
  """(torch kwargs, our host kwargs, our array kwargs) for the given media."""
  import torch
  torch_kw, host_kw, array_kw = {}, {}, {}
  if images:
    pv, grid = patches(images, seed), np.array(images)
    torch_kw.update(pixel_values=torch.tensor(pv), image_grid_thw=torch.tensor(grid))
    array_kw["pixel_values"], host_kw["image_grid_thw"] = jnp.asarray(pv), grid
  if videos:
    pv, grid = patches(videos, seed + 1), np.array(videos)
    torch_kw.update(pixel_values_videos=torch.tensor(pv), video_grid_thw=torch.tensor(grid))
    array_kw["pixel_values_videos"], host_kw["video_grid_thw"] = jnp.asarray(pv), grid
  if seconds is not None:
    torch_kw["video_second_per_grid"] = torch.tensor(seconds, dtype=torch.float32)
    host_kw["video_second_per_grid"] = np.array(seconds, np.float32)
  if audio_frames:
    feats, fmask = clips(audio_frames, seed + 2)
    torch_kw.update(input_features=torch.tensor(feats), feature_attention_mask=torch.tensor(fmask))
    array_kw["input_features"], host_kw["feature_attention_mask"] = jnp.asarray(feats), fmask
  return torch_kw, host_kw, array_kw


def torch_logits(ids, mask, **torch_kw):
  import torch
  with torch.no_grad():
    return hf_model()[0](input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                         **torch_kw).logits.numpy()


def run_both(ids, mask, use_audio_in_video=False, jit=True, **media):
  """Logits of transformers and of our model at the real tokens.

  With `jit`, our forward is compiled with token ids, masks and grids closed
  over as host values and pixels / features traced.
  """
  torch_kw, host_kw, array_kw = media_kwargs(**media)
  if use_audio_in_video:
    torch_kw["use_audio_in_video"] = host_kw["use_audio_in_video"] = True
  ref = torch_logits(ids, mask, **torch_kw)

  def forward(model, array_kw):
    return model(ids, attention_mask=mask, **host_kw, **array_kw).logits

  if jit:
    forward = nnx.jit(forward)
  out = forward(flax_model(), array_kw)
  valid = mask.astype(bool)
  return np.asarray(out)[valid], ref[valid]


def test_text_only_matches_transformers():
  ids, mask = batch([[1] + text(11, 0), [1] + text(6, 1)], side="left")
  out, ref = run_both(ids, mask, jit=False)  # also the plain eager call
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


def test_one_image_matches_transformers():
  grid = (1, 8, 12)  # a 4 x 6 merged grid: 2 x 3 windows
  ids, mask = batch([[1] + text(3, 2) + image(grid) + text(5, 3)])
  out, ref = run_both(ids, mask, images=[grid])
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_images_of_different_sizes_in_a_padded_batch(side):
  # Row 0 holds two images; row 1 one with a 3 x 5 merged grid (partial windows).
  a, c, b = (1, 8, 12), (1, 4, 4), (1, 6, 10)
  rows = [[1] + text(2, 4) + image(a) + text(3, 5) + image(c) + text(2, 6),
          [1] + text(4, 7) + image(b) + text(3, 8)]
  ids, mask = batch(rows, side)
  assert mask.min() == 0
  out, ref = run_both(ids, mask, images=[a, c, b], seed=1)
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


def test_videos_and_an_image_match_transformers():
  # 1.25 s per temporal patch at 4 ids/s: temporal ids 0, 5, 10 run past the
  # spatial extent; 0.35 s gives fractional ids (1.4, 2.8) to truncate.
  v1, v2, img = (3, 4, 8), (3, 4, 4), (1, 4, 6)
  rows = [[1] + text(3, 9) + video(v1) + text(4, 10),
          [1] + text(2, 11) + image(img) + text(2, 12) + video(v2) + text(3, 13)]
  ids, mask = batch(rows, "left")
  out, ref = run_both(ids, mask, images=[img], videos=[v1, v2], seconds=[1.25, 0.35], seed=2)
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


def test_audio_clips_match_transformers():
  # Clips of 37, 9 and 20 frames (9, 2 and 5 tokens); row 0 holds two.
  rows = [[1] + text(2, 14) + audio(37) + text(3, 15) + audio(9) + text(2, 16),
          [1] + text(4, 17) + audio(20) + text(3, 18)]
  ids, mask = batch(rows, "left")
  out, ref = run_both(ids, mask, audio_frames=[37, 9, 20], seed=3)
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)
  # The features matter: transformers with the first clip's features reversed in time.
  torch_kw, _, _ = media_kwargs(audio_frames=[37, 9, 20], seed=3)
  torch_kw["input_features"][0, :, :37] = torch_kw["input_features"][0, :, :37].flip(-1)
  moved = torch_logits(ids, mask, **torch_kw)[mask.astype(bool)]
  assert np.abs(moved - ref).max() > 100 * TOL


def interleaved_batch():
  """Videos with their audio, a standalone clip and an image; clips 37, 9 and 20 frames.

  Row 0's video (temporal ids 0, 2, 4, 6) has 2 chunks, its audio 3; row 1's
  (ids 0, 5) has 2 and its audio 2, and its last chunk of audio ends below
  the video's largest id, which is where the end tokens continue from.
  """
  v1, v2, img = (4, 4, 4), (2, 4, 8), (1, 4, 4)
  rows = [[1] + text(3, 19) + video_with_audio(v1, 0.5, 37) + text(4, 20),
          [1] + text(2, 21) + audio(9) + text(2, 22) + image(img) + text(1, 23)
          + video_with_audio(v2, 1.25, 20) + text(3, 24)]
  ids, mask = batch(rows, "left")
  media = dict(images=[img], videos=[v1, v2], seconds=[0.5, 1.25], audio_frames=[37, 9, 20])
  return ids, mask, media


def test_video_with_its_audio_interleaved_matches_transformers():
  ids, mask, media = interleaved_batch()
  out, ref = run_both(ids, mask, use_audio_in_video=True, seed=4, **media)
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)
  # The positions matter: transformers with plain text positions is far off.
  import torch
  torch_kw, _, _ = media_kwargs(seed=4, **media)
  plain = torch.tensor(np.broadcast_to(np.cumsum(mask, -1) - 1, (3,) + mask.shape).copy())
  moved = torch_logits(ids, mask, position_ids=plain, **torch_kw)[mask.astype(bool)]
  assert np.abs(moved - ref).max() > 100 * TOL


@pytest.mark.parametrize("use_audio_in_video", [True, False])
def test_rope_index_matches_transformers(use_audio_in_video):
  import torch
  if use_audio_in_video:
    ids, mask, media = interleaved_batch()
    # A third row: 10 ids per temporal patch jump past two chunk edges at once.
    v3 = (3, 4, 4)
    row = [1] + text(2, 25) + video_with_audio(v3, 2.5, 37) + text(2, 26)
    rows = [list(r[m.astype(bool)]) for r, m in zip(ids, mask)] + [row]
    ids, mask = batch(rows, "right")
    media["videos"].append(v3)
    media["seconds"].append(2.5)
    media["audio_frames"].append(37)
  else:
    v1, img = (3, 4, 8), (1, 6, 10)
    rows = [[1] + text(2, 27) + video(v1) + text(3, 28) + audio(20) + text(1, 29),
            [1] + image(img) + text(2, 30) + audio(9)]
    ids, mask = batch(rows, "left")
    media = dict(images=[img], videos=[v1], seconds=[1.25], audio_frames=[20, 9])
  _, host_kw, _ = media_kwargs(**media)
  ref, ref_delta = hf_model()[0].get_rope_index(
      torch.tensor(ids), image_grid_thw=torch.tensor(media["images"]),
      video_grid_thw=torch.tensor(media["videos"]), attention_mask=torch.tensor(mask),
      use_audio_in_video=use_audio_in_video,
      audio_seqlens=torch.tensor(host_kw["feature_attention_mask"].sum(-1)),
      second_per_grids=torch.tensor(media["seconds"]))
  pos, delta = rope_index(flax_model().cfg, ids, mask, use_audio_in_video=use_audio_in_video,
                          **host_kw)
  np.testing.assert_array_equal(pos, ref.numpy())
  np.testing.assert_array_equal(delta, ref_delta.numpy()[:, 0])


def test_rope_index_rejects_a_layout_that_does_not_interleave():
  v, frames = (4, 4, 4), 37
  tokens = video_with_audio(v, 0.5, frames)
  inner = sorted(tokens[2:-2])  # all video tokens first, then all audio tokens
  ids, mask = batch([[1] + tokens[:2] + inner + tokens[-2:]])
  _, host_kw, _ = media_kwargs(videos=[v], seconds=[0.5], audio_frames=[frames])
  with pytest.raises(ValueError, match="interleaved"):
    rope_index(flax_model().cfg, ids, mask, use_audio_in_video=True, **host_kw)


def test_export_round_trip(tmp_path):
  import torch
  import transformers
  from safetensors import safe_open
  out_dir = str(tmp_path / "export")
  orj.save_pretrained(flax_model(), out_dir)
  names = lambda d: set(safe_open(os.path.join(d, "model.safetensors"), "numpy").keys())
  assert names(out_dir) == names(hf_model()[1])
  reloaded = transformers.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
      out_dir).eval()
  ids, mask, media = interleaved_batch()
  torch_kw, _, _ = media_kwargs(seed=5, **media)
  torch_kw.update(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                  use_audio_in_video=True)
  with torch.no_grad():
    a = hf_model()[0](**torch_kw).logits.numpy()
    b = reloaded(**torch_kw).logits.numpy()
  np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)


def grads_and_logits(model, ids, mask, host_kw, array_kw):
  """Gradients of a simple loss and the logits, jitted with everything but the grids traced.

  This is the training path: positions come from `rope_index` beforehand and
  the audio layout (padded) is built on the host and passed in traced.
  """
  position_ids, _ = rope_index(model.cfg, ids, mask, **host_kw)
  layout = model.audio_tower.layout(feature_attention_mask=host_kw["feature_attention_mask"],
                                    num_windows=12, num_outputs=16)
  graphdef, params = nnx.split(model, nnx.Param)

  @jax.jit
  def run(params, ids, mask, position_ids, layout, array_kw):
    def loss(params):
      logits = nnx.merge(graphdef, params)(
          ids, attention_mask=mask, position_ids=position_ids, audio_layout=layout,
          image_grid_thw=host_kw["image_grid_thw"], **array_kw).logits
      return jnp.mean(jnp.where(mask[..., None] > 0, logits, 0) ** 2), logits
    return jax.grad(loss, has_aux=True)(params)

  grads, logits = run(params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(position_ids),
                      layout, array_kw)
  return params, grads, np.asarray(logits)


def test_freeze_encoders_stops_encoder_gradients_and_the_optimizer_can_mask_them():
  img = (1, 4, 6)
  ids, mask = batch([[1] + text(2, 31) + image(img) + text(2, 32) + audio(20) + text(2, 33),
                     [1] + text(3, 34) + audio(9) + text(1, 35)])
  media = dict(images=[img], audio_frames=[20, 9], seed=6)
  torch_kw, host_kw, array_kw = media_kwargs(**media)
  frozen = orj.from_pretrained(hf_model()[1], freeze_encoders=True)
  assert frozen.cfg.freeze_encoders and not flax_model().cfg.freeze_encoders
  params, grads, logits = grads_and_logits(frozen, ids, mask, host_kw, array_kw)
  ref = torch_logits(ids, mask, **torch_kw)
  valid = mask.astype(bool)
  np.testing.assert_allclose(logits[valid], ref[valid], atol=TOL, rtol=0)

  flat = lambda tree: [(p, np.asarray(v.get_value())) for p, v in nnx.to_flat_state(tree)]
  encoder = [(p, g) for p, g in flat(grads) if is_encoder_path(p)]
  text_grads = [g for p, g in flat(grads) if not is_encoder_path(p)]
  assert {p[0] for p, _ in encoder} == {"visual", "audio_tower"}
  assert all(not g.any() for _, g in encoder)
  assert all(np.isfinite(g).all() for g in text_grads) and any(g.any() for g in text_grads)
  # The same loss without freezing reaches both encoders.
  _, live, _ = grads_and_logits(flax_model(), ids, mask, host_kw, array_kw)
  live_norm = {name: sum(float(np.abs(g).sum()) for p, g in flat(live) if p[0] == name)
               for name in ("visual", "audio_tower")}
  assert min(live_norm.values()) > 0, live_norm

  # AdamW with weight decay would still move zero-gradient encoder weights;
  # labelling them "frozen" keeps them put.
  tx = optax.multi_transform({"trainable": optax.adamw(1e-2, weight_decay=0.1),
                              "frozen": optax.set_to_zero()}, encoder_param_labels(params))
  updates, _ = tx.update(grads, tx.init(params), params)
  moved = [(is_encoder_path(p), bool(u.any())) for p, u in flat(updates)]
  assert not any(m for encoder, m in moved if encoder)
  assert any(m for encoder, m in moved if not encoder)
