"""Loading Hugging Face checkpoint folders into Flax NNX models.

A checkpoint is checked as it loads, and each problem is one line naming the
tensor and the file: a missing, unexpected or misshapen tensor, and a tensor
whose dtype cannot hold a floating-point parameter (integers, bool, float8).
float16, bfloat16, float32 and float64 tensors are cast to the parameter
dtype; each kind of cast is logged once.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from omni_rrm_jax.models import hf_weights
from omni_rrm_jax.models.architectures import CONTAINERS, Architecture, get_architecture
from omni_rrm_jax.models.safetensors_io import CheckpointReader
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, Rules, spec_for

log = logging.getLogger(__name__)

# Files a model folder may carry besides config and weights; copied on export.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
    "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja",
    "chat_template.json", "generation_config.json", "preprocessor_config.json",
    "video_preprocessor_config.json",
)


class CheckpointError(ValueError):
  """A checkpoint that does not fit the model it is loaded into."""


def read_config_json(folder: str) -> dict:
  """The raw `config.json` of a model folder, with clear errors."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder}: not a directory")
  path = os.path.join(folder, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{folder}: no config.json (is this a Hugging Face model folder?)")
  try:
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
  except ValueError as e:
    raise ValueError(f"{path}: invalid JSON ({str(e).splitlines()[0][:200]})") from None
  except RecursionError:
    raise ValueError(f"{path}: invalid JSON (nested too deeply)") from None
  if not isinstance(raw, dict):
    raise ValueError(f"{path}: not a JSON object")
  return raw


def load_hf_config(folder: str, architecture: str | None = None):
  """(Architecture, transformers config) for a model folder.

  For a container checkpoint (e.g. a full Qwen2.5-Omni) the config is the
  nested one of the model loaded (the thinker's).
  """
  arch, hf, _ = resolve_checkpoint(folder, architecture)
  return arch, hf


def resolve_checkpoint(folder: str, architecture: str | None = None):
  """(Architecture, transformers config, Container or None) for a model folder.

  Args:
    folder: the model folder.
    architecture: overrides `config.json`'s `architectures[0]`. A container
      checkpoint (see `architectures.CONTAINERS`) loads as its inner
      architecture, or as this one, which must fit the inner config.
  """
  from transformers import AutoConfig  # configs only; never imports model code

  raw = read_config_json(folder)
  where, model_type = f"{folder}/config.json", raw.get("model_type")
  container = CONTAINERS.get(model_type) if model_type in CONTAINERS else None
  name = architecture or (raw.get("architectures") or [None])[0]
  if container is not None:
    if name in (None, container.name):
      name = container.architecture
    inner = raw.get(container.config_key)
    if not isinstance(inner, dict):
      raise ValueError(f"{where}: model_type {model_type!r} needs a {container.config_key!r} "
                       "object")
    where, model_type = f"{where} {container.config_key}", inner.get("model_type")
  if name is None:
    raise ValueError(f"{where}: no 'architectures' entry; pass architecture=...")
  arch = get_architecture(name)
  if model_type != arch.model_type:
    raise ValueError(f"{where}: model_type {model_type!r} does not match "
                     f"architecture {name} (expects {arch.model_type!r})")
  hf = AutoConfig.from_pretrained(folder)
  if container is not None:
    hf = getattr(hf, container.config_key)
  return arch, hf, container


def abstract_model(arch: Architecture, cfg) -> nnx.Module:
  return nnx.eval_shape(lambda: arch.module(cfg, rngs=nnx.Rngs(0)))


def _place(array: np.ndarray, sharding: NamedSharding | None) -> jax.Array:
  if sharding is None:
    return jax.device_put(array)
  # Each device reads only its own slice of the host array (multi-host safe).
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def from_pretrained(path: str, *, architecture: str | None = None, mesh: Mesh | None = None,
                    rules: Rules = DEFAULT_RULES, dtype: Any = "float32",
                    param_dtype: Any = "float32", remat: bool = False,
                    attention: str = "reference", scan_layers: bool = False,
                    init_missing: Sequence[str] = (),
                    ignore_unused: Sequence[str] = (),
                    seed: int = 0, **config_overrides):
  """Loads a Hugging Face model folder (config.json + safetensors) into Flax.

  Args:
    path: the folder. A full Qwen2.5-Omni checkpoint (thinker, talker and
      token2wav) loads as its thinker: `thinker_config` and the "thinker."
      tensors are read, the talker's and token2wav's tensors skipped.
    architecture: overrides `config.json`'s `architectures[0]`, e.g. to load a
      causal LM as a `Qwen2ForSequenceClassification` reward model; the new
      head's parameters must then be listed in `init_missing`.
    mesh: when given, every parameter is placed directly into its sharded
      array by its logical axis names and `rules`.
    rules: the logical -> mesh axis table.
    dtype: compute dtype ("float32" or "bfloat16").
    param_dtype: storage dtype of the parameters.
    remat: rematerialise each decoder layer in the backward pass.
    attention: the text decoder's attention implementation
      (`core/attention_impl.py`).
    scan_layers: hold the text decoder's layers stacked and run them with
      `nnx.scan` (`models/layer_stack.py`); the checkpoint is the same.
    init_missing: parameter-name prefixes (e.g. "score") that may be absent
      from the checkpoint; they are initialised from N(0, initializer_range).
      Checkpoint tensors no parameter asks for are then ignored too.
    ignore_unused: tensor-name prefixes the checkpoint may hold although the
      model has no such parameter, e.g. "score." to start a causal LM from a
      reward model's trunk (inner names for a full Omni checkpoint); other
      unused tensors are still an error.
    seed: seed for `init_missing` parameters.
    **config_overrides: set attributes of the transformers config first,
      e.g. `num_labels=1`, `pad_token_id=0`.

  Returns:
    The NNX model, e.g. a `CausalLM` or `SequenceClassifier`.
  """
  arch, hf_config, container = resolve_checkpoint(path, architecture)
  # Checkpoint name = prefix + our parameter's name; `other` are tensors of
  # sub-models we do not build.
  prefix, other = (container.prefix, container.ignored) if container else ("", ())
  for key, value in config_overrides.items():
    setattr(hf_config, key, value)
  cfg = arch.make_config(hf_config, dtype=dtype, param_dtype=param_dtype, remat=remat,
                         attention=attention, scan_layers=scan_layers)
  model = abstract_model(arch, cfg)
  graphdef, abstract_state = nnx.split(model)
  rng = np.random.default_rng(seed)
  consumed = set()
  casts_logged = set()
  with CheckpointReader(path) as reader:
    def load_one(path_tuple, shape, target_dtype, in_ndim):
      own = hf_weights.hf_name(path_tuple)
      name = prefix + own
      expected = hf_weights.hf_shape(path_tuple, shape, in_ndim)
      if name not in reader:
        if any(own.startswith(p) for p in init_missing):
          log.info("initialising %s %s (not in the checkpoint)", own, shape)
          return rng.normal(0.0, cfg.initializer_range, size=shape).astype(target_dtype)
        raise CheckpointError(f"{path}: missing tensor {name!r} (expected shape {expected})")
      got = reader.shape(name)
      if got != expected:
        raise CheckpointError(
            f"{path}: tensor {name!r} has shape {got}, the model expects {expected}")
      stored, target = reader.dtype(name), np.dtype(target_dtype).name
      if jnp.issubdtype(target_dtype, jnp.floating):
        if stored not in hf_weights.FLOAT_DTYPES:
          raise CheckpointError(
              f"{reader.file_of(name)}: tensor {name!r} has dtype {stored}; a floating-point "
              f"parameter loads only from {', '.join(hf_weights.FLOAT_DTYPES)}")
        if stored != target and (stored, target) not in casts_logged:
          casts_logged.add((stored, target))
          log.info("casting %s checkpoint tensors to %s (first: %s)", stored, target, name)
      consumed.add(name)
      return hf_weights.from_hf(reader.get(name), shape, in_ndim).astype(target_dtype)

    def load(path_tuple, variable):
      value = variable.get_value()
      shape, target_dtype = tuple(value.shape), value.dtype
      metadata = variable.get_metadata()
      in_ndim = metadata.get("in_ndim")
      sharding = None
      if mesh is not None:
        spec = spec_for(metadata.get("logical_axes"), rules, shape, mesh)
        sharding = NamedSharding(mesh, spec)
      parts = hf_weights.layer_paths(path_tuple, metadata, shape)
      if parts[0][1] is None:
        host = load_one(path_tuple, shape, target_dtype, in_ndim)
      else:  # stacked layers: one checkpoint tensor per layer
        host = np.stack([load_one(p, shape[1:], target_dtype, in_ndim) for p, _ in parts])
      return variable.replace(_place(host, sharding))

    flat = nnx.to_flat_state(abstract_state)
    loaded = [(p, load(p, v)) for p, v in flat]
    names = reader.names()
    others = [n for n in names if n.startswith(other)]
    extra = [n for n in names if n not in consumed and not n.startswith(other)
             and not n.endswith(hf_weights.IGNORED_SUFFIXES)
             and not (cfg.tie_word_embeddings and n == prefix + "lm_head.weight")]
    skipped = [n for n in extra if n.startswith(tuple(prefix + p for p in ignore_unused))]
    extra = [n for n in extra if n not in skipped]
  if others:
    log.info("ignoring %d checkpoint tensors of the %s sub-models", len(others),
             ", ".join(p.rstrip(".") for p in other))
  if skipped:
    log.info("ignoring checkpoint tensors %s: the model has no such parameters",
             ", ".join(skipped[:5]))
  if extra:
    if init_missing:
      log.info("ignoring %d checkpoint tensors the model does not use: %s", len(extra),
               ", ".join(extra[:5]))
    else:
      raise CheckpointError(
          f"{path}: {len(extra)} unexpected tensor(s) for {arch.name}: {', '.join(extra[:5])}"
          + (" ..." if len(extra) > 5 else ""))
  state = nnx.from_flat_state(loaded)
  model = nnx.merge(graphdef, state)
  model.source_path = os.path.abspath(path)  # tokenizer files are copied from here on export
  return model
