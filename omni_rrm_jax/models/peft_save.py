"""Writing a model's LoRA adapters as a PEFT adapter folder.

  save_peft_adapter(model, "out/adapter", base_model_path="Qwen/Qwen2.5-Omni-7B")
  # then, with transformers and peft:
  #   base = AutoModelForCausalLM.from_pretrained(base_path)
  #   model = PeftModel.from_pretrained(base, "out/adapter")

The folder holds `adapter_config.json` and `adapter_model.safetensors` with
PEFT's names (`base_model.model.<module>.lora_A.weight` `[rank, in]`,
`...lora_B.weight` `[out, rank]`). `target_modules` lists every adapted
module by its full name, so the encoders' layers of the same short name
(Qwen2.5-VL's vision MLP is also `gate_proj`) are never adapted on load.
PEFT names modules as they are in memory, which for the multimodal models is
not the checkpoint layout our paths follow: their text decoder
`model.layers.*` lives at `model.language_model.layers.*`. A
scalar RM's score head trains fully, so it travels as a module to save.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from omni_rrm_jax.models import hf_weights
from omni_rrm_jax.models import omni_config
from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.models.hf_save import _to_host
from omni_rrm_jax.models.lora import adapted_layers

# model_type -> (our text-decoder prefix, transformers' in-memory one).
IN_MEMORY_PREFIX = {"qwen2_5_vl": ("model.layers.", "model.language_model.layers."),
                    omni_config.MODEL_TYPE: ("model.layers.", "model.language_model.layers.")}
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
# Full-training heads that go into the adapter folder (PEFT's `modules_to_save`).
SAVED_HEADS = ("score",)


def peft_tensors(model: nnx.Module) -> tuple[dict[str, np.ndarray], list[str], dict]:
  """`(tensors, target module names, {"r", "lora_alpha", "lora_dropout"})` of `model`."""
  layers = adapted_layers(model)
  if not layers:
    raise ValueError("the model has no LoRA adapters to write (lora.rank is 0)")
  ours, in_memory = IN_MEMORY_PREFIX.get(get_architecture(model.cfg.architecture).model_type,
                                         ("", ""))
  tensors, targets, settings = {}, [], None
  for path, layer in sorted(layers.items(), key=lambda kv: str(kv[0])):
    adapter = layer.lora
    a_all, b_all = adapter.a.get_value(), adapter.b.get_value()
    # Stacked layers (`scan_layers`) hold every layer's adapter on a leading axis.
    for layer_path, index in hf_weights.layer_paths(path, adapter.a.get_metadata(),
                                                    a_all.shape):
      name = ".".join(str(p) for p in layer_path)
      if ours and name.startswith(ours):
        name = in_memory + name[len(ours):]
      a = _to_host(a_all if index is None else a_all[index])
      b = _to_host(b_all if index is None else b_all[index])
      rank = a.shape[-1]
      tensors[f"{PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(a.reshape(-1, rank).T)
      tensors[f"{PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(b.reshape(rank, -1).T)
      targets.append((str(layer_path), name))
      mine = dict(r=int(rank), lora_alpha=adapter.alpha, lora_dropout=adapter.dropout)
      if settings not in (None, mine):
        raise ValueError(f"{name}: adapter settings {mine} differ from the others' "
                         f"{settings}; a PEFT folder has one rank and alpha")
      settings = mine
  targets = [name for _, name in sorted(targets)]  # the same order for either layout
  for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    if str(path[0]) in SAVED_HEADS:
      in_ndim = variable.get_metadata().get("in_ndim")
      tensors[PREFIX + hf_weights.hf_name(path)] = hf_weights.to_hf(
          path, _to_host(variable.get_value()), in_ndim)
  return tensors, targets, settings


def save_peft_adapter(model: nnx.Module, out_dir: str, *, base_model_path: str = "") -> str:
  """Writes `model`'s adapters (and a scalar RM's score head) as a PEFT folder.

  Only process 0 writes; every process must call this (for the gathers).

  Args:
    model: a model adapted by `models.lora.apply_lora`.
    out_dir: the folder to write.
    base_model_path: recorded as `base_model_name_or_path` (the folder or hub
      name of the base the adapters go on).

  Returns:
    `out_dir`.
  """
  tensors, targets, settings = peft_tensors(model)
  if jax.process_index() != 0:
    return out_dir
  arch = get_architecture(model.cfg.architecture)
  heads = sorted({t.split(".")[2] for t in tensors if t.split(".")[2] in SAVED_HEADS})
  config = dict(
      peft_type="LORA", task_type="SEQ_CLS" if arch.is_classifier else "CAUSAL_LM",
      base_model_name_or_path=base_model_path or None, target_modules=targets,
      modules_to_save=heads or None, bias="none", fan_in_fan_out=False,
      init_lora_weights=True, inference_mode=True, use_rslora=False, use_dora=False,
      **settings)
  os.makedirs(out_dir, exist_ok=True)
  save_file(tensors, os.path.join(out_dir, ADAPTER_WEIGHTS), metadata={"format": "pt"})
  with open(os.path.join(out_dir, ADAPTER_CONFIG), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  return out_dir
