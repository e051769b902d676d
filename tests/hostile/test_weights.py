"""Hostile checkpoints: wrong dtypes, damaged files and shards outside the
model folder are one line naming the tensor and file, never a silent cast, a
traceback or a tensor read from elsewhere."""

from __future__ import annotations

import json
import logging
import os

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import omni_rrm_jax as orj
from omni_rrm_jax.models.pretrained import CheckpointError
from tests.e2e.runs import cli

WEIGHT = "model.layers.0.mlp.up_proj.weight"


def _edit(folder, fn, file="model.safetensors"):
  tensors = load_file(str(folder / file))
  fn(tensors)
  save_file(tensors, str(folder / file), metadata={"format": "pt"})


def _cast(name, dtype):
  def fn(tensors):
    tensors[name] = tensors[name].astype(dtype)
  return fn


def _one_line(excinfo) -> str:
  message = str(excinfo.value)
  assert "\n" not in message and len(message) < 400, message
  return message


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, bool,
                                   ml_dtypes.float8_e4m3fn])
def test_non_float_weights_are_refused_naming_tensor_and_file(model_copy, dtype):
  _edit(model_copy, _cast(WEIGHT, dtype))
  with pytest.raises(CheckpointError) as e:
    orj.from_pretrained(str(model_copy))
  message = _one_line(e)
  assert message.startswith(f"{model_copy / 'model.safetensors'}: tensor {WEIGHT!r} has dtype "
                            f"{np.dtype(dtype).name};")


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float64])
def test_float_weights_are_cast_and_the_cast_logged_once(model_copy, dtype, caplog):
  _edit(model_copy, lambda t: t.update({k: v.astype(dtype) for k, v in t.items()}))
  with caplog.at_level(logging.INFO, logger="omni_rrm_jax.models.pretrained"):
    model = orj.from_pretrained(str(model_copy))
  casts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("casting")]
  assert len(casts) == 1 and casts[0].startswith(f"casting {np.dtype(dtype).name} checkpoint "
                                                 "tensors to float32")
  stored = load_file(str(model_copy / "model.safetensors"))[WEIGHT]
  loaded = np.asarray(model.model.layers[0].mlp.up_proj.kernel[...])
  np.testing.assert_array_equal(loaded, stored.astype(np.float32).T)


def test_bool_weights_stop_the_cli_with_one_line(model_copy, tmp_path):
  """Before: a bool-weight model trained to the end with exit code 0."""
  _edit(model_copy, _cast(WEIGHT, bool))
  done = cli("rm.py:tiny", str(tmp_path / "work"), f"--config.model.path={model_copy}",
             "--config.data.synthetic_train=32", "--config.data.synthetic_eval=8",
             "--config.train.num_steps=2", "--config.optim.warmup_steps=0", timeout=300)
  assert done.returncode != 0
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("omni-rrm: error: ") and f"tensor {WEIGHT!r} has dtype bool" in last
  assert "Traceback" not in done.stderr


def _damage(folder, how: str, file: str = "model.safetensors") -> None:
  path = folder / file
  data = path.read_bytes()
  path.write_bytes({"truncated": data[:len(data) // 2], "garbage": os.urandom(4096),
                    "empty": b"", "header_only": data[:8]}[how])


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "header_only"])
def test_damaged_safetensors_is_one_line_naming_the_file(model_copy, how):
  _damage(model_copy, how)
  with pytest.raises(ValueError) as e:
    orj.from_pretrained(str(model_copy))
  assert _one_line(e).startswith(f"{model_copy / 'model.safetensors'}: not a readable "
                                 "safetensors file (")


def _shard(folder, shard_name: str) -> None:
  """Moves the weights to `shard_name` (relative to the folder) behind an index."""
  names = list(load_file(str(folder / "model.safetensors")))
  target = folder / shard_name
  target.parent.mkdir(parents=True, exist_ok=True)
  os.replace(folder / "model.safetensors", target)
  index = {"metadata": {}, "weight_map": {n: shard_name for n in names}}
  (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def test_damaged_shard_is_one_line_naming_it(model_copy):
  _shard(model_copy, "model-00001-of-00001.safetensors")
  _damage(model_copy, "truncated", "model-00001-of-00001.safetensors")
  with pytest.raises(ValueError) as e:
    orj.from_pretrained(str(model_copy))
  assert _one_line(e).startswith(f"{model_copy / 'model-00001-of-00001.safetensors'}: not a "
                                 "readable safetensors file")


@pytest.mark.parametrize("index", ["not json {", "[1, 2]", '{"weight_map": [1]}',
                                   '{"weight_map": {"a": 3}}', "[" * 100_000])
def test_bad_index_is_one_line(model_copy, index):
  (model_copy / "model.safetensors.index.json").write_text(index)
  with pytest.raises(ValueError) as e:
    orj.from_pretrained(str(model_copy))
  assert _one_line(e).startswith(str(model_copy / "model.safetensors.index.json"))


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink_file", "symlink_dir"])
def test_index_shard_outside_the_folder_is_refused(model_copy, tmp_path, escape):
  outside = tmp_path / "elsewhere"
  outside.mkdir()
  _shard(model_copy, "model-00001-of-00001.safetensors")
  os.replace(model_copy / "model-00001-of-00001.safetensors", outside / "w.safetensors")
  index_path = model_copy / "model.safetensors.index.json"
  index = json.loads(index_path.read_text())
  shard = {"dotdot": "../elsewhere/w.safetensors",
           "absolute": str(outside / "w.safetensors"),
           "symlink_file": "w.safetensors", "symlink_dir": "sub/w.safetensors"}[escape]
  if escape == "symlink_file":
    (model_copy / "w.safetensors").symlink_to(outside / "w.safetensors")
  if escape == "symlink_dir":
    (model_copy / "sub").symlink_to(outside)
  index["weight_map"] = {name: shard for name in index["weight_map"]}
  index_path.write_text(json.dumps(index))
  with pytest.raises(ValueError) as e:
    orj.from_pretrained(str(model_copy))
  message = _one_line(e)
  assert message.startswith(f"{index_path}: shard {shard!r} of tensor ")
  expected = "is an absolute path" if escape == "absolute" else "lies outside the model folder"
  assert expected in message


def test_shards_inside_the_folder_and_hub_cache_links_still_load(tiny_model, tmp_path):
  """A shard in a subfolder, and a hub cache snapshot whose files link into ../../blobs."""
  import shutil

  reference = orj.from_pretrained(str(tiny_model))
  inside = tmp_path / "inside"
  shutil.copytree(tiny_model, inside)
  _shard(inside, "weights/model-00001-of-00001.safetensors")
  cache = tmp_path / "models--tiny"
  snapshot = cache / "snapshots" / "abc123"
  (cache / "blobs").mkdir(parents=True)
  shutil.copytree(tiny_model, snapshot)
  _shard(snapshot, "model-00001-of-00001.safetensors")
  os.replace(snapshot / "model-00001-of-00001.safetensors", cache / "blobs" / "f00d")
  (snapshot / "model-00001-of-00001.safetensors").symlink_to("../../blobs/f00d")
  for folder in (inside, snapshot):
    loaded = orj.from_pretrained(str(folder))
    np.testing.assert_array_equal(np.asarray(loaded.model.layers[0].mlp.up_proj.kernel[...]),
                                  np.asarray(reference.model.layers[0].mlp.up_proj.kernel[...]))
