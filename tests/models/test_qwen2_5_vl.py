"""Qwen2.5-VL parity with transformers (fp32, max |diff| <= 1e-4), layout and export.

Both models get the same patches and grids, built here directly (random
patches of the flattened size C*T*P*P), so nothing depends on image
preprocessing. The vision config windows the merged grid into 2 x 2 windows,
so windowed and full attention differ, and q/k weights are scaled up (as in
hf_fixtures) so attention is sharp enough for a wrong position or mask to show.
"""

import functools
import os
import tempfile

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import omni_rrm_jax as orj
from omni_rrm_jax.models import mrope
from omni_rrm_jax.models.architectures import ARCHITECTURES, Architecture
from omni_rrm_jax.models.qwen2_5_vl import (ARCHITECTURE, Qwen2_5_VLForConditionalGeneration,
                                            qwen2_5_vl_config_from_hf, rope_index)
from omni_rrm_jax.models.vision_layout import window_index

TOL = 1e-4
VOCAB, PAD, IMAGE, VIDEO, VSTART, VEND = 101, 0, 90, 91, 92, 93
TEXT_CONFIG = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                   pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                    "mrope_section": [1, 1, 2]})
# window_size / merge / patch = 2 merged tokens a window side.
VISION_CONFIG = dict(depth=2, hidden_size=32, intermediate_size=40, num_heads=4, in_channels=3,
                     patch_size=2, temporal_patch_size=2, spatial_merge_size=2, window_size=8,
                     out_hidden_size=32, fullatt_block_indexes=[1], tokens_per_second=2)
PATCH_DIM = 3 * 2 * 2 * 2

assert ARCHITECTURE in ARCHITECTURES  # registered by models/architectures.py


@functools.cache
def hf_model():
  """(torch model, saved folder) of a tiny random Qwen2.5-VL."""
  import torch
  import transformers
  torch.manual_seed(25)
  config = transformers.Qwen2_5_VLConfig(
      text_config=TEXT_CONFIG, vision_config=VISION_CONFIG, image_token_id=IMAGE,
      video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND)
  model = transformers.Qwen2_5_VLForConditionalGeneration(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or "ln_q" in name or name.endswith(".bias"):
        p.add_(0.1 * torch.randn_like(p))
      if name.endswith(("q_proj.weight", "k_proj.weight")):
        p.mul_(15.0)
      if name.endswith("attn.qkv.weight"):
        p[: 2 * VISION_CONFIG["hidden_size"]].mul_(15.0)  # the q and k rows
  folder = os.path.join(tempfile.mkdtemp(prefix="omni_rrm_qwen2_5_vl_"), "model")
  model.save_pretrained(folder)
  return model, folder


@functools.cache
def flax_model():
  return orj.from_pretrained(hf_model()[1])


def tokens_of(grid, merge=2):
  t, h, w = grid
  return t * h * w // merge ** 2


def media(kind, grid):
  return [VSTART] + [kind] * tokens_of(grid) + [VEND]


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


def run_both(ids, mask, images=(), videos=(), seconds=None, seed=0, jit=True):
  """Logits of transformers and of our model at the real tokens.

  With `jit`, our forward is compiled with the token ids, mask and grids
  closed over as host constants (so positions come from the default host path) and
  pixels traced: one compile is much faster than op-by-op dispatch.
  """
  import torch
  torch_kw, host_kw, pixel_kw = {}, {}, {}
  if images:
    pv, grid = patches(images, seed), np.array(images)
    torch_kw.update(pixel_values=torch.tensor(pv), image_grid_thw=torch.tensor(grid))
    pixel_kw["pixel_values"], host_kw["image_grid_thw"] = jnp.asarray(pv), grid
  if videos:
    pv, grid = patches(videos, seed + 1), np.array(videos)
    torch_kw.update(pixel_values_videos=torch.tensor(pv), video_grid_thw=torch.tensor(grid))
    pixel_kw["pixel_values_videos"], host_kw["video_grid_thw"] = jnp.asarray(pv), grid
  if seconds is not None:
    torch_kw["second_per_grid_ts"] = torch.tensor(seconds, dtype=torch.float32)
    host_kw["second_per_grid_ts"] = np.array(seconds, np.float32)
  types = mrope.token_types(ids, IMAGE, VIDEO)
  with torch.no_grad():
    ref = hf_model()[0](input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        mm_token_type_ids=torch.tensor(types), **torch_kw).logits.numpy()

  def forward(model, pixel_kw):
    return model(ids, attention_mask=mask, **host_kw, **pixel_kw).logits

  if jit:
    forward = nnx.jit(forward)
  out = forward(flax_model(), pixel_kw)
  valid = mask.astype(bool)
  return np.asarray(out)[valid], ref[valid]


def test_text_only_matches_transformers():
  ids, mask = batch([[1] + text(11, 0), [1] + text(6, 1)], side="right")
  out, ref = run_both(ids, mask, jit=False)  # also the plain eager call
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


def test_one_image_matches_transformers():
  grid = (1, 8, 12)  # a 4 x 6 merged grid: 2 x 3 windows
  ids, mask = batch([[1] + text(3, 2) + media(IMAGE, grid) + text(5, 3)])
  out, ref = run_both(ids, mask, images=[grid])
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_images_of_different_sizes_in_a_padded_batch(side):
  # Row 0 holds two images; row 1 one with a 3 x 5 merged grid (partial windows).
  a, c, b = (1, 8, 12), (1, 4, 4), (1, 6, 10)
  rows = [[1] + text(2, 4) + media(IMAGE, a) + text(3, 5) + media(IMAGE, c) + text(2, 6),
          [1] + text(4, 7) + media(IMAGE, b) + text(3, 8)]
  ids, mask = batch(rows, side)
  assert mask.min() == 0
  out, ref = run_both(ids, mask, images=[a, c, b], seed=1)
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


def test_videos_and_an_image_match_transformers():
  # 1.25 s per temporal patch at 2 tokens/s: temporal ids 0, 2, 5 run past the
  # spatial extent (4), and 0.75 s gives fractional steps (0, 1) to truncate.
  v1, v2, img = (3, 4, 8), (2, 4, 4), (1, 4, 6)
  rows = [[1] + text(3, 9) + media(VIDEO, v1) + text(4, 10),
          [1] + text(2, 11) + media(IMAGE, img) + text(2, 12) + media(VIDEO, v2) + text(3, 13)]
  ids, mask = batch(rows, "left")
  out, ref = run_both(ids, mask, images=[img], videos=[v1, v2], seconds=[1.25, 0.75], seed=2)
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


def test_rope_index_matches_transformers():
  import torch
  v1, img = (3, 4, 8), (1, 6, 10)
  rows = [[1] + text(2, 14) + media(VIDEO, v1) + text(3, 15),
          [1] + media(IMAGE, img) + text(2, 16)]
  ids, mask = batch(rows, "left")
  ref, ref_delta = hf_model()[0].model.get_rope_index(
      torch.tensor(ids), torch.tensor(mrope.token_types(ids, IMAGE, VIDEO)),
      image_grid_thw=torch.tensor([img]), video_grid_thw=torch.tensor([v1]),
      second_per_grid_ts=torch.tensor([1.25]), attention_mask=torch.tensor(mask))
  pos, delta = rope_index(flax_model().cfg, ids, mask, image_grid_thw=[img],
                          video_grid_thw=[v1], second_per_grid_ts=[1.25])
  np.testing.assert_array_equal(pos, ref.numpy())
  np.testing.assert_array_equal(delta, ref_delta.numpy()[:, 0])


def test_vision_encoder_matches_transformers():
  import torch
  grids = [(1, 8, 12), (2, 6, 10), (1, 4, 4)]  # the second is a 2-frame video
  pv = patches(grids, 3)
  with torch.no_grad():
    ref = hf_model()[0].model.visual(torch.tensor(pv), grid_thw=torch.tensor(grids))
  model = flax_model()
  out = np.asarray(model.visual(jnp.asarray(pv), np.array(grids)))
  assert out.shape == (sum(map(tokens_of, grids)), TEXT_CONFIG["hidden_size"])
  np.testing.assert_allclose(out, ref.pooler_output.numpy(), atol=TOL, rtol=0)

  # The test is sensitive to the windows: full attention everywhere is far off.
  layout = model.visual.layout(grids)
  unwindowed = np.asarray(model.visual.encode(jnp.asarray(pv),
                                              layout.replace(window_n=layout.frame_n)))
  assert np.abs(unwindowed - out).max() > 10 * TOL


@pytest.mark.parametrize("grids", [[(1, 8, 12)], [(2, 6, 10), (1, 4, 4), (3, 8, 8)]])
def test_window_order_is_a_permutation_and_matches_transformers(grids):
  import torch
  from transformers.vision_utils import get_vision_window_index
  order_m, window_m = window_index(grids, 2, 8, 2)
  m = len(order_m)
  np.testing.assert_array_equal(np.sort(order_m), np.arange(m))
  assert (np.diff(window_m) >= 0).all()  # windows are contiguous
  ref_order, ref_cu = get_vision_window_index(torch.tensor(grids), 2, 8, 2)
  np.testing.assert_array_equal(order_m, ref_order.numpy())
  cu = np.concatenate([[0], np.cumsum(np.bincount(window_m)) * 4])
  np.testing.assert_array_equal(cu, ref_cu.numpy())

  layout = flax_model().visual.layout(grids)
  x_m = np.random.RandomState(0).randn(m)
  np.testing.assert_array_equal(x_m[order_m][layout.unperm_m], x_m)
  n = m * 4
  np.testing.assert_array_equal(np.sort(layout.perm_n), np.arange(n))
  np.testing.assert_array_equal(layout.perm_n.reshape(m, 4)[:, 0] // 4, order_m)


def test_traced_ids_with_precomputed_positions():
  """Under jit with traced token ids, positions come from `rope_index` on the host."""
  grid = (1, 8, 12)
  ids, mask = batch([[1] + text(3, 17) + media(IMAGE, grid) + text(2, 18)])
  pv = jnp.asarray(patches([grid], 4))
  model = flax_model()
  pos, _ = rope_index(model.cfg, ids, mask, image_grid_thw=[grid])

  @nnx.jit
  def forward(model, ids, mask, pv, pos=None):
    return model(ids, attention_mask=mask, pixel_values=pv, image_grid_thw=np.array([grid]),
                 position_ids=pos).logits

  traced = forward(model, jnp.asarray(ids), jnp.asarray(mask), pv, jnp.asarray(pos))
  host = nnx.jit(lambda model, pv: model(
      ids, attention_mask=mask, pixel_values=pv, image_grid_thw=np.array([grid])).logits)(
          model, pv)
  np.testing.assert_allclose(np.asarray(traced), np.asarray(host), atol=1e-5, rtol=0)
  with pytest.raises(TypeError, match="position_ids"):
    forward(model, jnp.asarray(ids), jnp.asarray(mask), pv)

  # Text only, positions are 0..T-1 whatever the ids: no host values needed.
  text_ids, text_mask = batch([[1] + text(6, 21)])
  logits = nnx.jit(lambda model, ids, mask: model(ids, attention_mask=mask).logits)(
      model, jnp.asarray(text_ids), jnp.asarray(text_mask))
  np.testing.assert_allclose(np.asarray(logits), np.asarray(model(
      jnp.asarray(text_ids), attention_mask=jnp.asarray(text_mask)).logits), atol=1e-5, rtol=0)


def test_export_round_trip(tmp_path):
  import torch
  import transformers
  from safetensors import safe_open
  model = flax_model()
  out_dir = str(tmp_path / "export")
  orj.save_pretrained(model, out_dir)
  names = lambda d: set(safe_open(os.path.join(d, "model.safetensors"), "numpy").keys())
  assert names(out_dir) == names(hf_model()[1])
  reloaded = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(out_dir).eval()
  grid = (1, 6, 10)
  ids, mask = batch([[1] + text(2, 19) + media(IMAGE, grid) + text(3, 20)])
  kw = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
            mm_token_type_ids=torch.tensor(mrope.token_types(ids, IMAGE, VIDEO)),
            pixel_values=torch.tensor(patches([grid], 5)), image_grid_thw=torch.tensor([grid]))
  with torch.no_grad():
    a = hf_model()[0](**kw).logits.numpy()
    b = reloaded(**kw).logits.numpy()
  np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
