"""Building models from a config (random init), born sharded on a mesh."""

from __future__ import annotations

from typing import Any, Mapping

from flax import nnx
from jax.sharding import Mesh

from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.sharding.params import create_sharded
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, Rules


def hf_config_for(architecture: str, config: Mapping[str, Any] | Any):
  """A transformers config object for `architecture` from a dict (or passes one through)."""
  import transformers  # configs only

  if not isinstance(config, Mapping):
    return config
  arch = get_architecture(architecture)
  config_cls = transformers.AutoConfig.for_model(arch.model_type).__class__
  return config_cls(**dict(config))


def from_config(architecture: str, config: Mapping[str, Any] | Any, *, mesh: Mesh | None = None,
                rules: Rules = DEFAULT_RULES, seed: int = 0, dtype: Any = "float32",
                param_dtype: Any = "float32", remat: bool = False,
                attention: str = "reference", scan_layers: bool = False) -> nnx.Module:
  """A randomly initialised model of a supported architecture.

  Args:
    architecture: e.g. "Qwen2ForSequenceClassification".
    config: a dict of transformers config fields (`hidden_size`, ...) or a
      transformers config object.
    mesh: when given, parameters are created already sharded.
    rules: the logical -> mesh axis table.
    seed: parameter initialisation seed.
    dtype: compute dtype.
    param_dtype: parameter storage dtype.
    remat: rematerialise decoder layers in the backward pass.
    attention: the text decoder's attention implementation
      (`core/attention_impl.py`).
    scan_layers: stack the text decoder's layers and run them with `nnx.scan`.
  """
  arch = get_architecture(architecture)
  hf = hf_config_for(architecture, config)
  cfg = arch.make_config(hf, dtype=dtype, param_dtype=param_dtype, remat=remat,
                         attention=attention, scan_layers=scan_layers)
  return create_sharded(lambda: arch.module(cfg, rngs=nnx.Rngs(params=seed)), mesh, rules)
