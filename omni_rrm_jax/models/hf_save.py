"""Writing Flax models back to Hugging Face folders (config.json + safetensors).

The counterpart of `pretrained.py`; it sits beside it so that training (which
exports a trained model) does not depend on the `export/` tasks.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Mapping

import jax
import ml_dtypes  # noqa: F401  (bfloat16 arrays for the safetensors writer)
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from safetensors.numpy import save_file

from omni_rrm_jax.models import hf_weights
from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.models.lora import adapted_layers, merge_lora
from omni_rrm_jax.models.pretrained import TOKENIZER_FILES
from omni_rrm_jax.models.safetensors_io import INDEX_FILE, SINGLE_FILE

DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3

_DTYPE_NAMES = {np.dtype(np.float32): "float32", np.dtype(ml_dtypes.bfloat16): "bfloat16",
                np.dtype(np.float16): "float16"}


def _to_host(array: jax.Array) -> np.ndarray:
  if isinstance(array, jax.Array) and not array.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))
  return np.asarray(array)


def _plan_shards(entries, max_shard_bytes):
  shards, current, size = [], [], 0
  for entry in entries:
    nbytes = entry[3]
    if current and size + nbytes > max_shard_bytes:
      shards.append(current)
      current, size = [], 0
    current.append(entry)
    size += nbytes
  if current:
    shards.append(current)
  return shards


def save_pretrained(model: nnx.Module, out_dir: str, *,
                    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                    tokenizer_dir: str | None = None,
                    processor_files: Mapping[str, Mapping[str, Any]] | None = None) -> str:
  """Writes `model` as a folder that transformers' `from_pretrained` loads.

  Weights go to `model.safetensors`, or to numbered shards plus
  `model.safetensors.index.json` above `max_shard_bytes`. Tensors are
  gathered to the host one at a time. Tokenizer (and processor) files are
  copied from `tokenizer_dir`, or else from the folder the model was loaded
  from; `processor_files` (file name -> JSON content, e.g.
  `MediaConfig.to_preprocessor_configs()`) are written last, so the media
  preprocessing a model was trained with travels with it.
  Only process 0 writes; every process must call this (for the gathers).
  A model with LoRA adapters is written merged (`W + scale·A·B`), as the
  plain architecture transformers knows (`models/peft_save.py` writes the
  adapters on their own).

  Returns:
    `out_dir`.
  """
  if adapted_layers(model):
    model = merge_lora(model)
  cfg = model.cfg
  state = nnx.state(model, nnx.Param)
  entries = []
  for path, variable in nnx.to_flat_state(state):
    value = variable.get_value()
    metadata = variable.get_metadata()
    in_ndim = metadata.get("in_ndim")
    # Stacked layers (`scan_layers`) are written as one tensor per layer.
    parts = hf_weights.layer_paths(path, metadata, value.shape)
    nbytes = int(np.prod(value.shape)) * np.dtype(value.dtype).itemsize // len(parts)
    for layer_path, index in parts:
      entries.append((layer_path, variable, in_ndim, nbytes, index))
  shards = _plan_shards(entries, max_shard_bytes)
  writer = jax.process_index() == 0
  if writer:
    os.makedirs(out_dir, exist_ok=True)
  weight_map, total = {}, 0
  for i, shard in enumerate(shards):
    fname = SINGLE_FILE if len(shards) == 1 else (
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors")
    tensors = {}
    for path, variable, in_ndim, nbytes, index in shard:
      name = hf_weights.hf_name(path)
      value = variable.get_value()
      value = value if index is None else value[index]
      tensors[name] = hf_weights.to_hf(path, _to_host(value), in_ndim)
      weight_map[name] = fname
      total += nbytes
    if writer:
      save_file(tensors, os.path.join(out_dir, fname), metadata={"format": "pt"})
    del tensors
  if not writer:
    return out_dir
  if len(shards) > 1:
    with open(os.path.join(out_dir, INDEX_FILE), "w", encoding="utf-8") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2,
                sort_keys=True)
  config = json.loads(cfg.hf_config_json)
  config["architectures"] = [cfg.architecture]
  first = entries[0][1].get_value().dtype if entries else np.float32
  config["dtype"] = _DTYPE_NAMES.get(np.dtype(first), "float32")
  config.pop("torch_dtype", None)
  if get_architecture(cfg.architecture).is_classifier:
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(cfg.num_labels)}
    config["pad_token_id"] = cfg.pad_token_id
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  source = tokenizer_dir or getattr(model, "source_path", None)
  if source and os.path.abspath(source) != os.path.abspath(out_dir):
    for fname in TOKENIZER_FILES:
      src = os.path.join(source, fname)
      if os.path.exists(src):
        shutil.copyfile(src, os.path.join(out_dir, fname))
  for fname, content in (processor_files or {}).items():
    with open(os.path.join(out_dir, fname), "w", encoding="utf-8") as f:
      json.dump(content, f, indent=2, sort_keys=True)
  return out_dir
