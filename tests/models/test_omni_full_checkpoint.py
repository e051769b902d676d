"""A released-format Qwen2.5-Omni checkpoint (thinker, talker and token2wav) loads as our thinker.

transformers builds the full model at tiny size around the thinker of
test_qwen2_5_omni (same config and the same sharpened weights) and saves it:
config `qwen2_5_omni` with a nested `thinker_config`, tensors `thinker.*`,
`talker.*` and `token2wav.*`. Our loader reads the thinker part and skips the
speech-output models; parity is against transformers' `model.thinker`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

import omni_rrm_jax as orj
from omni_rrm_jax.models.omni import (Qwen2_5OmniThinkerForConditionalGeneration,
                                      Qwen2_5OmniThinkerForSequenceClassification)
from omni_rrm_jax.models.omni_config import CLASSIFIER_ARCHITECTURE
from omni_rrm_jax.models.pretrained import CheckpointError
from tests.models.test_qwen2_5_omni import (TOL, audio, batch, hf_model, image, media_kwargs,
                                            text)

# Tiny speech-output models; only their tensor names matter here.
TALKER_CONFIG = dict(vocab_size=64, embedding_size=32, hidden_size=32, intermediate_size=48,
                     num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                     head_dim=8, max_position_embeddings=64,
                     rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                      "mrope_section": [1, 1, 2]})
TOKEN2WAV_CONFIG = dict(
    dit_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, head_dim=8,
                    emb_dim=16, enc_emb_dim=8, enc_dim=8, enc_channels=[16, 16, 16, 16, 48],
                    enc_attention_channels=8, enc_se_channels=8, num_embeds=32, mel_dim=8,
                    look_ahead_layers=[1], look_backward_layers=[0]),
    bigvgan_config=dict(mel_dim=8, upsample_initial_channel=16, upsample_rates=[2, 2],
                        upsample_kernel_sizes=[4, 4]))
LOGGER = "omni_rrm_jax.models.pretrained"


@functools.cache
def full_model():
  """(torch Qwen2_5OmniForConditionalGeneration, saved folder) around hf_model()'s thinker."""
  import torch
  import transformers
  from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni as hf_cfg
  thinker = hf_model()[0]
  torch.manual_seed(27)
  config = hf_cfg.Qwen2_5OmniConfig(thinker_config=thinker.config.to_dict(),
                                    talker_config=TALKER_CONFIG,
                                    token2wav_config=TOKEN2WAV_CONFIG)
  model = transformers.Qwen2_5OmniForConditionalGeneration(config).eval()
  model.thinker.load_state_dict(thinker.state_dict())
  folder = os.path.join(tempfile.mkdtemp(prefix="omni_rrm_qwen2_5_omni_full_"), "model")
  model.save_pretrained(folder)
  return model, folder


@functools.cache
def flax_model():
  return orj.from_pretrained(full_model()[1])


def tensor_names(folder) -> list[str]:
  return sorted(load_file(os.path.join(folder, "model.safetensors")))


def run_both(ids, mask, **media):
  """Logits of transformers' `model.thinker` and of ours at the real tokens."""
  import torch
  torch_kw, host_kw, array_kw = media_kwargs(**media)
  with torch.no_grad():
    ref = full_model()[0].thinker(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                  **torch_kw).logits.numpy()
  out = flax_model()(ids, attention_mask=mask, **host_kw, **array_kw).logits
  valid = mask.astype(bool)
  return np.asarray(out)[valid], ref[valid]


def test_the_saved_folder_is_the_released_format():
  folder = full_model()[1]
  with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
    raw = json.load(f)
  assert raw["model_type"] == "qwen2_5_omni"
  assert raw["architectures"] == ["Qwen2_5OmniForConditionalGeneration"]
  assert raw["thinker_config"]["model_type"] == "qwen2_5_omni_thinker"
  tops = {n.split(".")[0] + "." + n.split(".")[1] for n in tensor_names(folder)}
  assert {"thinker.model", "thinker.visual", "thinker.audio_tower", "thinker.lm_head",
          "talker.model"} <= tops
  assert {t.split(".")[0] for t in tops} == {"thinker", "talker", "token2wav"}


def test_text_only_matches_the_thinker():
  assert isinstance(flax_model(), Qwen2_5OmniThinkerForConditionalGeneration)
  ids, mask = batch([[1] + text(11, 0), [1] + text(6, 1)], side="left")
  out, ref = run_both(ids, mask)
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


def test_image_and_audio_match_the_thinker():
  grid = (1, 8, 12)
  rows = [[1] + text(3, 2) + image(grid) + text(2, 3) + audio(20) + text(2, 4),
          [1] + text(4, 5) + audio(9) + text(3, 6)]
  ids, mask = batch(rows, "left")
  out, ref = run_both(ids, mask, images=[grid], audio_frames=[20, 9], seed=7)
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


def test_loads_as_reward_model_and_skips_the_speech_models_with_one_log_line(caplog):
  folder = full_model()[1]
  speech = [n for n in tensor_names(folder) if n.startswith(("talker.", "token2wav."))]
  with caplog.at_level(logging.INFO, logger=LOGGER):
    rm = orj.from_pretrained(folder, architecture=CLASSIFIER_ARCHITECTURE,
                             init_missing=("score",), num_labels=1)
  assert isinstance(rm, Qwen2_5OmniThinkerForSequenceClassification)
  assert rm.score.kernel[...].shape == (32, 1)
  skipped = [r.getMessage() for r in caplog.records if "sub-models" in r.getMessage()]
  line = f"ignoring {len(speech)} checkpoint tensors of the talker, token2wav sub-models"
  assert skipped == [line]
  # The trunk is the thinker's, tensor for tensor.
  params = lambda m: {p: np.asarray(v.get_value())  # noqa: E731
                      for p, v in nnx.to_flat_state(nnx.state(m, nnx.Param))}
  lm, got = params(flax_model()), params(rm)
  trunk = [p for p in got if p[0] != "score"]
  assert {p[0] for p in trunk} == {"model", "visual", "audio_tower"}
  for p in trunk:
    np.testing.assert_array_equal(got[p], lm[p], err_msg=str(p))
  ids, mask = batch([[1] + text(5, 8), [1] + text(3, 9)], side="left")
  scores = np.asarray(rm(ids, attention_mask=mask).logits)
  assert scores.shape == (2, 1) and np.isfinite(scores).all()


@pytest.mark.parametrize("bogus", ["thinker.model.layers.9.bogus.weight", "vocoder.weight"])
def test_an_unknown_tensor_is_still_an_error(tmp_path, bogus):
  folder = tmp_path / "model"
  shutil.copytree(full_model()[1], folder)
  tensors = load_file(str(folder / "model.safetensors"))
  tensors[bogus] = np.zeros(3, np.float32)
  save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(CheckpointError) as e:
    orj.from_pretrained(str(folder))
  msg = str(e.value)
  assert "\n" not in msg and "1 unexpected tensor(s)" in msg and bogus in msg


def test_a_missing_thinker_tensor_is_named_with_its_prefix(tmp_path):
  folder = tmp_path / "model"
  shutil.copytree(full_model()[1], folder)
  tensors = load_file(str(folder / "model.safetensors"))
  tensors.pop("thinker.model.layers.1.mlp.up_proj.weight")
  save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(CheckpointError) as e:
    orj.from_pretrained(str(folder))
  assert "\n" not in str(e.value)
  assert "missing tensor 'thinker.model.layers.1.mlp.up_proj.weight'" in str(e.value)


def test_an_architecture_that_does_not_fit_the_thinker_config_is_one_line():
  with pytest.raises(ValueError) as e:
    orj.from_pretrained(full_model()[1], architecture="Qwen2ForCausalLM")
  msg = str(e.value)
  assert "\n" not in msg and "thinker_config" in msg and "'qwen2_5_omni_thinker'" in msg
