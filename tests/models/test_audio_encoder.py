"""The Qwen2.5-Omni audio encoder: host layout rules and parity with transformers (fp32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_rrm_jax.models import hf_weights
from omni_rrm_jax.models.audio import AudioEncoder, audio_config_from_hf
from omni_rrm_jax.models.audio_layout import (build_audio_layout, feat_extract_output_lengths,
                                              window_table)

TOL = 1e-4
PREFIX = "audio_tower."
# n_window=4: windows of 8 frames, 4 tokens, so the clips below span 1-5 windows.
AUDIO = dict(num_mel_bins=128, d_model=32, encoder_layers=2, encoder_attention_heads=4,
             encoder_ffn_dim=48, n_window=4, output_dim=24, max_source_positions=64)
TEXT = dict(vocab_size=101, hidden_size=24, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 2, 2]})
VISION = dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=24,
              fullatt_block_indexes=[0])


@pytest.fixture(scope="module")
def thinker_dir(tmp_path_factory):
  """A tiny random thinker saved by transformers, so tensor names are the real ones."""
  import torch
  import transformers
  from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni as hf_cfg
  torch.manual_seed(0)
  config = hf_cfg.Qwen2_5OmniThinkerConfig(audio_config=AUDIO, text_config=TEXT,
                                           vision_config=VISION)
  model = transformers.Qwen2_5OmniThinkerForConditionalGeneration(config).eval()
  # Unit-scale weights, non-trivial norms and biases, and large q/k weights so
  # attention is sharp: a wrong window, position or mask then moves the
  # output far past the tolerance instead of averaging out.
  with torch.no_grad():
    for name, p in model.model.audio_tower.named_parameters():
      if name.endswith("norm.weight") or name.startswith("ln_post.weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.2 * torch.randn_like(p))
      else:
        fan_in = p[0].numel()
        p.copy_(torch.randn_like(p) / fan_in ** 0.5)
      if name.endswith(("q_proj.weight", "k_proj.weight")):
        p.mul_(3.0)
  folder = tmp_path_factory.mktemp("tiny_thinker")
  model.save_pretrained(str(folder))
  return str(folder)


@pytest.fixture(scope="module")
def hf_thinker(thinker_dir):
  import transformers
  return transformers.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
      thinker_dir).eval()


def load_audio_tower(folder: str) -> AudioEncoder:
  """Loads our encoder from the thinker checkpoint through the generic name/layout mapping."""
  import transformers
  from safetensors.numpy import load_file
  cfg = audio_config_from_hf(transformers.AutoConfig.from_pretrained(folder))
  tensors = {k: v for k, v in load_file(f"{folder}/model.safetensors").items()
             if k.startswith(PREFIX)}
  graphdef, state = nnx.split(nnx.eval_shape(lambda: AudioEncoder(cfg, nnx.Rngs(0))))
  loaded, names = [], set()
  for path, variable in nnx.to_flat_state(state):
    in_ndim = variable.get_metadata().get("in_ndim")
    name = PREFIX + hf_weights.hf_name(path)
    assert tensors[name].shape == hf_weights.hf_shape(path, variable.shape, in_ndim), name
    value = hf_weights.from_hf(tensors[name], variable.shape, in_ndim)
    loaded.append((path, variable.replace(jnp.asarray(value))))
    names.add(name)
  assert names == set(tensors), sorted(set(tensors) ^ names)
  return nnx.merge(graphdef, nnx.from_flat_state(loaded))


@pytest.fixture(scope="module")
def encoder(thinker_dir):
  return load_audio_tower(thinker_dir)


def _hf_layout(lens, n_window):
  """transformers' own window bookkeeping, for the host-layout tests."""
  import torch
  from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as hf
  lens_t = torch.tensor(lens)
  feats = torch.zeros(1, int(sum(lens)))
  _, chunk_lengths = hf.chunk_and_pad_features(feats, lens_t, n_window)
  cu_seqlens = hf.get_audio_cu_seqlens(chunk_lengths)
  valid = hf.get_valid_indices(chunk_lengths)
  pool = hf.get_pool_indices(lens_t)
  return chunk_lengths.numpy(), cu_seqlens.numpy(), valid.numpy(), pool.numpy()


def _padded_clips(lens, frames, seed):
  """[B, 128, frames] random features, clip b in the first lens[b] frames, and the mask."""
  rng = np.random.RandomState(seed)
  feats = rng.randn(len(lens), 128, frames).astype(np.float32)
  mask = (np.arange(frames)[None, :] < np.asarray(lens)[:, None]).astype(np.int64)
  return feats * mask[:, None, :], mask


def test_output_lengths_match_transformers(hf_thinker):
  import torch
  lens = np.arange(1, 400)
  after_cnn, out = feat_extract_output_lengths(lens)
  ref_cnn, ref_out = hf_thinker.model.audio_tower._get_feat_extract_output_lengths(
      torch.tensor(lens))
  np.testing.assert_array_equal(after_cnn, ref_cnn.numpy())
  np.testing.assert_array_equal(out, ref_out.numpy())
  assert feat_extract_output_lengths(3000) == (1500, 750)  # 30 s of audio


@pytest.mark.parametrize("n_window", [3, 4])
def test_layout_matches_transformers_bookkeeping(n_window):
  """Windows, token boundaries and pooling pairs equal transformers'.

  With an odd n_window, pooling pairs straddle window boundaries.
  """
  lens = [37, 1, 8, 9, 2, 20, 17]
  chunk_lengths, cu_seqlens, valid, pool = _hf_layout(lens, n_window)
  table = window_table(lens, n_window)
  np.testing.assert_array_equal(table.frames_c, chunk_lengths)
  layout = build_audio_layout(n_window, feature_lens=lens)
  np.testing.assert_array_equal(layout.token_valid_cn.sum(1), np.diff(cu_seqlens))
  np.testing.assert_array_equal(layout.frame_valid_cw.sum(1), chunk_lengths)
  # Our token grid has N = n_window slots per window; transformers' padded grid has
  # as many as its longest window, which here is also n_window.
  grid_index = np.flatnonzero(layout.token_valid_cn.reshape(-1))
  np.testing.assert_array_equal(grid_index, valid)
  np.testing.assert_array_equal(layout.pool_index_p2, grid_index[np.stack([pool, pool + 1], 1)])
  _, output_lens = feat_extract_output_lengths(np.array(lens))
  np.testing.assert_array_equal(layout.output_lens_a, output_lens)
  # Concatenated input: window c's frames are a contiguous run of the clip.
  starts = np.cumsum(lens) - lens
  np.testing.assert_array_equal(layout.frame_index_cw[:, 0], starts[table.clip_c] + table.start_c)


def test_layout_from_mask_follows_masked_frames():
  """Frames come from the masked-in positions of each row, wherever they are."""
  mask = np.array([[0, 1, 1, 0, 1, 1, 1, 0, 1, 1],
                   [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]])
  layout = build_audio_layout(2, feature_attention_mask=mask, num_windows=5, num_outputs=4)
  np.testing.assert_array_equal(layout.feature_lens_a, [7, 3])
  rows = layout.frame_index_cw[layout.frame_valid_cw]
  np.testing.assert_array_equal(rows, np.flatnonzero(mask.reshape(-1)))
  assert layout.frame_index_cw.shape == (5, 4) and not layout.frame_valid_cw[3:].any()
  np.testing.assert_array_equal(layout.output_valid_p, [True, True, True, False])
  with pytest.raises(ValueError, match="num_windows=2"):
    build_audio_layout(2, feature_attention_mask=mask, num_windows=2)


def test_one_clip_matches_transformers(hf_thinker, encoder):
  """The audio tower's own form: a [mel, L] clip and its length; 37 frames = 5 windows."""
  import torch
  feats = np.random.RandomState(1).randn(128, 37).astype(np.float32)
  with torch.no_grad():
    ref = hf_thinker.model.audio_tower(torch.tensor(feats),
                                       feature_lens=torch.tensor([37])).last_hidden_state.numpy()
  out = np.asarray(encoder(jnp.asarray(feats), feature_lens=[37]))
  assert out.shape == ref.shape == (9, 24)
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)
  assert np.abs(ref).max() > 0.5  # the numbers are not vanishingly small


def test_three_clips_with_feature_attention_mask_match_transformers(hf_thinker, encoder):
  """Clips of 37, 9 and 20 frames padded to 44, via the thinker's get_audio_features; jitted."""
  import torch
  lens = [37, 9, 20]
  feats, mask = _padded_clips(lens, 44, seed=2)
  with torch.no_grad():
    ref = hf_thinker.get_audio_features(
        torch.tensor(feats), feature_attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
  layout = encoder.layout(feature_attention_mask=mask)
  graphdef, state = nnx.split(encoder)
  run = jax.jit(lambda s, x, lay: nnx.merge(graphdef, s)(x, lay))
  out = np.asarray(run(state, jnp.asarray(feats), layout))
  assert out.shape == ref.shape == (int(layout.output_lens_a.sum()), 24)
  np.testing.assert_array_equal(layout.output_lens_a, [9, 2, 5])
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


def test_window_mask_matters(hf_thinker, encoder):
  """Attending across windows, or to padded tokens, moves the output far past the tolerance."""
  import torch
  lens = [37, 9, 20]
  feats, mask = _padded_clips(lens, 44, seed=2)
  out = np.asarray(encoder(jnp.asarray(feats), feature_attention_mask=mask))
  # transformers with one attention block per clip instead of per window.
  concat = np.concatenate([feats[b, :, :n] for b, n in enumerate(lens)], axis=1)
  after_cnn, _ = feat_extract_output_lengths(np.array(lens))
  per_clip = torch.tensor(np.concatenate([[0], np.cumsum(after_cnn)]), dtype=torch.int32)
  with torch.no_grad():
    unwindowed = hf_thinker.model.audio_tower(
        torch.tensor(concat), feature_lens=torch.tensor(lens), cu_seqlens=per_clip)
  assert np.abs(out - unwindowed.last_hidden_state.numpy()).max() > 100 * TOL
  # Ours without the padded-key mask (clip ends leave windows part empty).
  layout = encoder.layout(feature_attention_mask=mask)
  x_cne = encoder.embed_windows(jnp.asarray(feats), layout)
  unmasked = encoder.pool_and_project(
      encoder.encode_windows(x_cne, jnp.ones_like(layout.token_valid_cn)), layout)
  assert np.abs(out - np.asarray(unmasked)).max() > 100 * TOL


def test_padded_layouts_share_one_compilation(encoder):
  """Batches padded to the same window/output counts reuse the compiled function."""
  traces = []
  graphdef, state = nnx.split(encoder)

  def forward(s, x, lay):
    traces.append(1)
    return nnx.merge(graphdef, s)(x, lay)

  run = jax.jit(forward)
  for lens in ([37, 9, 20], [12, 30, 3]):
    feats, mask = _padded_clips(lens, 44, seed=sum(lens))
    padded = encoder.layout(feature_attention_mask=mask, num_windows=12, num_outputs=20)
    out = np.asarray(run(state, jnp.asarray(feats), padded))
    exact = np.asarray(encoder(jnp.asarray(feats), feature_attention_mask=mask))
    np.testing.assert_allclose(out[padded.output_valid_p], exact, atol=1e-5, rtol=0)
  assert len(traces) == 1


def test_export_names_and_layouts_round_trip(thinker_dir, encoder):
  """Our parameters, written back with the generic mapping, equal the checkpoint's tensors."""
  from safetensors.numpy import load_file
  tensors = load_file(f"{thinker_dir}/model.safetensors")
  for path, variable in nnx.to_flat_state(nnx.state(encoder, nnx.Param)):
    in_ndim = variable.get_metadata().get("in_ndim")
    assert variable.get_metadata().get("logical_axes"), path
    name = PREFIX + hf_weights.hf_name(path)
    np.testing.assert_array_equal(
        hf_weights.to_hf(path, np.asarray(variable.get_value()), in_ndim), tensors[name])
