"""Bad checkpoints give one clear line that names what and where."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import omni_rrm_jax as orj
from omni_rrm_jax.models.pretrained import CheckpointError
from tests.models.hf_fixtures import saved_model


@pytest.fixture
def folder(tmp_path):
  dst = tmp_path / "model"
  shutil.copytree(saved_model("qwen2_lm"), dst)
  return dst


def _edit_weights(folder, fn):
  tensors = load_file(str(folder / "model.safetensors"))
  fn(tensors)
  save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _one_line(excinfo):
  msg = str(excinfo.value)
  assert "\n" not in msg
  return msg


def test_unsupported_architecture_lists_supported(folder):
  cfg = json.loads((folder / "config.json").read_text())
  cfg["architectures"] = ["GPT2LMHeadModel"]
  (folder / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError) as e:
    orj.from_pretrained(str(folder))
  msg = _one_line(e)
  assert "GPT2LMHeadModel" in msg and "Qwen2ForCausalLM" in msg and "LlamaForSequenceClassification" in msg


def test_missing_tensor(folder):
  _edit_weights(folder, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(CheckpointError) as e:
    orj.from_pretrained(str(folder))
  assert "missing tensor 'model.layers.1.mlp.up_proj.weight'" in _one_line(e)


def test_extra_tensor(folder):
  _edit_weights(folder, lambda t: t.__setitem__("model.layers.9.bogus.weight", np.zeros(3, np.float32)))
  with pytest.raises(CheckpointError) as e:
    orj.from_pretrained(str(folder))
  assert "model.layers.9.bogus.weight" in _one_line(e)


def test_shape_mismatch_names_tensor_and_both_shapes(folder):
  _edit_weights(folder, lambda t: t.__setitem__(
      "model.layers.0.self_attn.k_proj.weight", np.zeros((8, 32), np.float32)))
  with pytest.raises(CheckpointError) as e:
    orj.from_pretrained(str(folder))
  msg = _one_line(e)
  assert "model.layers.0.self_attn.k_proj.weight" in msg and "(8, 32)" in msg and "(16, 32)" in msg


def test_folder_without_config(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError) as e:
    orj.from_pretrained(str(tmp_path / "empty"))
  assert "no config.json" in _one_line(e)


def test_folder_without_weights(folder):
  (folder / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError) as e:
    orj.from_pretrained(str(folder))
  assert "model.safetensors" in _one_line(e)


def test_causal_lm_loads_as_reward_model_with_new_head(folder):
  """The usual RM start: a causal LM checkpoint with a fresh score head."""
  with pytest.raises(CheckpointError, match="missing tensor 'score.weight'"):
    orj.from_pretrained(str(folder), architecture="Qwen2ForSequenceClassification")
  rm = orj.from_pretrained(str(folder), architecture="Qwen2ForSequenceClassification",
                           init_missing=("score",), num_labels=1)
  assert rm.score.kernel[...].shape == (32, 1)
  lm = orj.from_pretrained(str(folder))
  np.testing.assert_array_equal(np.asarray(rm.model.layers[0].mlp.up_proj.kernel[...]),
                                np.asarray(lm.model.layers[0].mlp.up_proj.kernel[...]))


def test_reward_model_trunk_loads_as_causal_lm(folder):
  """A judge starting from a reward model: `score.weight` is dropped only when asked."""
  _edit_weights(folder, lambda t: t.__setitem__("score.weight", np.ones((1, 32), np.float32)))
  with pytest.raises(CheckpointError, match="unexpected tensor.*score.weight"):
    orj.from_pretrained(str(folder))
  lm = orj.from_pretrained(str(folder), ignore_unused=("score.",))
  ref = orj.from_pretrained(saved_model("qwen2_lm"))
  np.testing.assert_array_equal(np.asarray(lm.model.layers[1].mlp.up_proj.kernel[...]),
                                np.asarray(ref.model.layers[1].mlp.up_proj.kernel[...]))
  # Other unused tensors are still an error.
  _edit_weights(folder, lambda t: t.__setitem__("model.layers.9.bogus.weight",
                                                np.zeros(3, np.float32)))
  with pytest.raises(CheckpointError, match="bogus"):
    orj.from_pretrained(str(folder), ignore_unused=("score.",))


def test_layer_types_must_name_every_layer():
  import transformers

  from omni_rrm_jax.models.config import decoder_config_from_hf

  hf = transformers.Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32,
                                num_hidden_layers=3, num_attention_heads=2,
                                num_key_value_heads=1)
  assert len(decoder_config_from_hf(hf, "qwen2").layer_types) == 3
  hf.num_hidden_layers = 2  # changed without its layer_types, as a config edit can leave it
  with pytest.raises(ValueError, match="layer_types names 3 layers but num_hidden_layers is 2"):
    decoder_config_from_hf(hf, "qwen2")
