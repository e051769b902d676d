"""The decoder configuration, read from a Hugging Face config object."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from omni_rrm_jax.core.attention_impl import ATTENTION_IMPLEMENTATIONS

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def resolve_dtype(name: str | Any) -> Any:
  if not isinstance(name, str):
    return name
  try:
    return DTYPES[name]
  except KeyError:
    raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}") from None


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Everything the Flax decoder needs, independent of the source format.

  Attributes mirror the Hugging Face names; `dtype` is the compute dtype and
  `param_dtype` the storage dtype of parameters (fp32 master weights with bf16
  compute is `param_dtype="float32", dtype="bfloat16"`).
  """
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  hidden_act: str = "silu"
  max_position_embeddings: int = 2048
  # Sorted (key, value) pairs so the config stays hashable (it is static
  # metadata of the module graph); `rope_dict` gives the mapping back.
  rope: tuple = (("rope_theta", 10000.0), ("rope_type", "default"))
  tie_word_embeddings: bool = False
  qkv_bias: bool = False
  o_bias: bool = False
  mlp_bias: bool = False
  qk_norm: bool = False
  layer_types: tuple[str, ...] = ()
  sliding_window: int | None = None
  pad_token_id: int | None = None
  num_labels: int = 1
  initializer_range: float = 0.02
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  # How attention is computed (core/attention_impl.py); not part of the
  # transformers config, so never exported.
  attention: str = "reference"
  # One stacked layer module run with `nnx.scan` instead of a list of layers
  # (`layer_stack.py`): compile time independent of depth; same numerics.
  scan_layers: bool = False
  # The architecture name and the Hugging Face config it came from (as JSON),
  # so that an export writes back the same config.
  architecture: str = ""
  hf_config_json: str = "{}"

  @property
  def rope_dict(self) -> dict:
    return dict(self.rope)

  def __post_init__(self):
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(
          f"num_attention_heads={self.num_attention_heads} is not a multiple of "
          f"num_key_value_heads={self.num_key_value_heads}")
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"attention {self.attention!r} is not one of "
                       f"{', '.join(ATTENTION_IMPLEMENTATIONS)}")
    if self.hidden_act not in ("silu", "swish"):
      raise ValueError(f"hidden_act {self.hidden_act!r} is not supported (silu only)")


def _get(hf, name, default=None):
  value = getattr(hf, name, default)
  return default if value is None else value


def decoder_config_from_hf(hf, family: str, **overrides) -> DecoderConfig:
  """Builds a `DecoderConfig` from a transformers config object.

  Args:
    hf: a transformers `PretrainedConfig` (Qwen2, Qwen3 or Llama).
    family: "qwen2", "qwen3" or "llama": decides the bias / norm layout the
      transformers implementation hard-codes for that family.
    **overrides: `dtype`, `param_dtype`, `remat`, `attention`, `scan_layers`,
      `architecture`.
  """
  heads = hf.num_attention_heads
  head_dim = _get(hf, "head_dim") or hf.hidden_size // heads
  rope = dict(_get(hf, "rope_parameters", {}) or {})
  if not rope:  # transformers 4.x style configs
    rope = dict(_get(hf, "rope_scaling", {}) or {})
    rope.setdefault("rope_theta", _get(hf, "rope_theta", 10000.0))
  rope.setdefault("rope_type", rope.pop("type", "default"))
  if "rope_theta" not in rope:
    rope["rope_theta"] = _get(hf, "rope_theta", 10000.0)
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    raise ValueError("partial_rotary_factor != 1 is not supported")
  if family == "qwen2":
    qkv_bias, o_bias, mlp_bias, qk_norm = True, False, False, False
  elif family == "qwen3":
    bias = bool(_get(hf, "attention_bias", False))
    qkv_bias, o_bias, mlp_bias, qk_norm = bias, bias, False, True
  elif family == "llama":
    bias = bool(_get(hf, "attention_bias", False))
    qkv_bias, o_bias, mlp_bias, qk_norm = bias, bias, bool(_get(hf, "mlp_bias", False)), False
  else:
    raise ValueError(f"unknown decoder family {family!r}")
  layer_types = tuple(_get(hf, "layer_types", ()) or ())
  if layer_types and len(layer_types) != hf.num_hidden_layers:
    raise ValueError(f"config layer_types names {len(layer_types)} layers but "
                     f"num_hidden_layers is {hf.num_hidden_layers}")
  num_labels = getattr(hf, "num_labels", None) or 1
  kwargs = dict(
      vocab_size=hf.vocab_size,
      hidden_size=hf.hidden_size,
      intermediate_size=hf.intermediate_size,
      num_hidden_layers=hf.num_hidden_layers,
      num_attention_heads=heads,
      num_key_value_heads=_get(hf, "num_key_value_heads", heads),
      head_dim=head_dim,
      rms_norm_eps=_get(hf, "rms_norm_eps", 1e-6),
      hidden_act=_get(hf, "hidden_act", "silu"),
      max_position_embeddings=_get(hf, "max_position_embeddings", 2048),
      rope=tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in rope.items())),
      tie_word_embeddings=bool(_get(hf, "tie_word_embeddings", False)),
      qkv_bias=qkv_bias,
      o_bias=o_bias,
      mlp_bias=mlp_bias,
      qk_norm=qk_norm,
      layer_types=layer_types,
      sliding_window=_get(hf, "sliding_window") if "sliding_attention" in layer_types else None,
      pad_token_id=getattr(hf, "pad_token_id", None),
      num_labels=num_labels,
      initializer_range=_get(hf, "initializer_range", 0.02),
      hf_config_json=hf.to_json_string(use_diff=False),
  )
  for key in ("dtype", "param_dtype"):
    if key in overrides:
      overrides[key] = resolve_dtype(overrides[key])
  kwargs.update(overrides)
  return DecoderConfig(**kwargs)
