"""Low-rank adapters (LoRA) on the text decoder's linear layers.

  paths = apply_lora(model, rank=8, alpha=32.0)           # in place; B starts at zero
  y = W·x + (alpha / rank) · B·A·x                          # what an adapted layer computes
  merged = merge_lora(model)                                # a plain model with W + ΔW
  base = without_adapters(state)                            # the base model's parameters

An adapter hangs on a `layers.DenseGeneral` as its `lora` attribute. Its
matrices are `nnx.LoRAParam`s carrying logical axes derived from the wrapped
kernel's (`a`: the kernel's input axes plus a replicated rank axis; `b`: a
replicated rank axis plus its output axes), so they shard like the layer they
adapt. Module names stay the transformers ones (`...self_attn.q_proj.lora.a`),
which is how PEFT's `lora_A` / `lora_B` names are derived on export.
On stacked layers (`scan_layers`) each adapter is stacked as its kernel is,
with the same leading `layers` axis.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_rrm_jax.models import hf_weights
from omni_rrm_jax.models.layers import DenseGeneral, contract_trailing

# The text decoder's linear layers, by their transformers names (attention, then MLP).
LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Top-level modules that are not the text decoder (the encoders of the multimodal models).
ENCODERS = ("visual", "audio_tower")
LORA_RANK_AXIS = None  # the rank axis is small: replicated on every mesh

_DROPOUT_KEY: list[jax.Array | None] = [None]


@contextlib.contextmanager
def lora_dropout(key: jax.Array | None) -> Iterator[None]:
  """Within the block, adapters with dropout > 0 drop their inputs with keys from `key`.

  Outside it (evaluation, sampling, export) dropout is off. Each adapter folds
  its own index into `key`, so every layer draws a different mask.
  """
  _DROPOUT_KEY.append(key)
  try:
    yield
  finally:
    _DROPOUT_KEY.pop()


def active_dropout_key() -> jax.Array | None:
  """The key of the innermost `lora_dropout` block (None: dropout off)."""
  return _DROPOUT_KEY[-1]


class LoraAdapter(nnx.Module):
  """`x -> scale · (x·A)·B`, with A [*in_shape, rank] and B [rank, *out_shape].

  A is drawn as PEFT does (uniform in ±1/sqrt(fan_in)); B starts at zero, so
  an adapted model equals its base until B trains.
  """

  def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], *,
               in_axes: tuple, out_axes: tuple, rank: int, alpha: float, dropout: float,
               index: int, dtype, param_dtype, rngs: nnx.Rngs,
               stack: tuple[int, str] | None = None):
    fan_in = int(np.prod(in_shape))
    bound = 1.0 / np.sqrt(fan_in)
    # Adapters of stacked layers (`scan_layers`) are stacked too: (layers, axis name).
    lead, lead_axes = ((stack[0],), (stack[1],)) if stack else ((), ())
    a_init = jax.random.uniform(rngs.params(), (*lead, *in_shape, rank), param_dtype,
                                -bound, bound)
    self.a = nnx.LoRAParam(a_init, logical_axes=(*lead_axes, *in_axes, LORA_RANK_AXIS))
    self.b = nnx.LoRAParam(jnp.zeros((*lead, rank, *out_shape), param_dtype),
                           logical_axes=(*lead_axes, LORA_RANK_AXIS, *out_axes))
    self.stacked = stack is not None
    self.in_ndim = len(in_shape)
    self.rank, self.alpha = rank, float(alpha)
    self.scale = float(alpha) / rank
    self.dropout = float(dropout)
    self.index = index
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    key = _DROPOUT_KEY[-1]
    x = x.astype(self.dtype)
    if self.dropout > 0 and key is not None:
      keep = jax.random.bernoulli(jax.random.fold_in(key, self.index), 1.0 - self.dropout,
                                  x.shape)
      x = jnp.where(keep, x / (1.0 - self.dropout), 0).astype(self.dtype)
    h = contract_trailing(x, self.a[...].astype(self.dtype), self.in_ndim)
    return contract_trailing(h, self.b[...].astype(self.dtype), 1) * self.scale

  def delta(self) -> jax.Array:
    """scale · A·B in the kernel's layout `[*in_shape, *out_shape]` (per layer when stacked)."""
    product = lambda a, b: jnp.tensordot(a, b, axes=1)  # noqa: E731
    if self.stacked:
      product = jax.vmap(product)
    return product(self.a[...], self.b[...]) * self.scale


def _dense_layers(model: nnx.Module):
  for path, module in nnx.iter_graph(model):
    if isinstance(module, DenseGeneral):
      yield tuple(path), module


def text_linear_layers(model: nnx.Module) -> dict[tuple, nnx.Module]:
  """The text decoder's linear layers of `LINEAR_LAYERS`, by module path."""
  return {path: m for path, m in _dense_layers(model)
          if path and str(path[0]) not in ENCODERS and str(path[-1]) in LINEAR_LAYERS}


def apply_lora(model: nnx.Module, *, rank: int, alpha: float, dropout: float = 0.0,
               targets: Sequence[str] = LINEAR_LAYERS, seed: int = 0) -> list[tuple]:
  """Attaches an adapter to each text-decoder linear layer named in `targets`, in place.

  Args:
    model: any decoder, Qwen2.5-VL or Omni thinker model (the encoders'
      layers are never adapted).
    rank: the adapters' rank (> 0).
    alpha: the scale is `alpha / rank`.
    dropout: the rate at which adapters drop their inputs in training.
    targets: layer names among `LINEAR_LAYERS`.
    seed: draws the A matrices.

  Returns:
    The adapted module paths.

  Raises:
    ValueError: a bad rank, a target that names no linear layer of the model,
      or a model that already has adapters.
  """
  if rank < 1:
    raise ValueError(f"lora.rank must be >= 1, got {rank}")
  if adapted_layers(model):
    raise ValueError("the model already has LoRA adapters; merge them first (merge_lora)")
  layers = text_linear_layers(model)
  present = sorted({str(p[-1]) for p in layers})
  unknown = [t for t in targets if t not in present]
  if unknown or not targets:
    raise ValueError(f"lora.targets {list(unknown or targets)} match no linear layer of the "
                     f"text decoder; known: {', '.join(present)}")
  rngs = nnx.Rngs(params=seed)
  paths = []
  for index, (path, layer) in enumerate(sorted(layers.items(), key=lambda kv: str(kv[0]))):
    if str(path[-1]) not in targets:
      continue
    kernel = layer.kernel
    axes = kernel.get_metadata()["logical_axes"]
    shape = kernel.get_value().shape
    stack = None
    if hf_weights.is_stacked(kernel.get_metadata()):
      stack, axes, shape = (shape[0], axes[0]), axes[1:], shape[1:]
    n = layer.in_ndim
    layer.lora = LoraAdapter(shape[:n], shape[n:], in_axes=axes[:n], out_axes=axes[n:],
                             rank=rank, alpha=alpha, dropout=dropout, index=index,
                             dtype=layer.dtype, param_dtype=kernel.get_value().dtype, rngs=rngs,
                             stack=stack)
    paths.append(path)
  return paths


def adapted_layers(model: nnx.Module) -> dict[tuple, nnx.Module]:
  """Every linear layer carrying an adapter, by module path."""
  return {path: m for path, m in _dense_layers(model) if getattr(m, "lora", None) is not None}


def merge_lora(model: nnx.Module) -> nnx.Module:
  """A copy of `model` with each adapter folded into its kernel and removed."""
  merged = nnx.clone(model)  # new variables; the base model is left as it was
  for _, layer in adapted_layers(merged).items():
    kernel = layer.kernel
    kernel.set_value((kernel.get_value() + layer.lora.delta()).astype(kernel.get_value().dtype))
    layer.lora = None
  return merged


def without_adapters(state: nnx.State) -> nnx.State:
  """`state` with every adapter's B at zero: the base model's outputs, no weights copied."""
  def one(path, leaf):
    names = [_key(p) for p in path if _key(p) != "value"]
    return jnp.zeros_like(leaf) if names[-2:] == ["lora", "b"] else leaf

  return jax.tree_util.tree_map_with_path(one, state)


def _key(entry) -> str:
  return str(getattr(entry, "key", getattr(entry, "name", entry)))
