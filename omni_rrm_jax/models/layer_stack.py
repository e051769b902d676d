"""The decoder's layer stack: a list of layers run in a loop, or one stacked module scanned.

  layers = make_layers(cfg, lambda rngs: DecoderLayer(cfg, rngs), rngs)
  x_bte = run_layers(layers, cfg, x_bte, cos, sin, masks)           # full forward
  x_bte, k, v = run_layers_cached(layers, cfg, x_bte, cos, sin, masks, k, v, start)

With `cfg.scan_layers` off, `layers` is an `nnx.List` of one module per layer
(parameter paths `layers.0.self_attn...`, as in Hugging Face checkpoints).
With it on, `layers` is ONE module whose parameters carry a leading layer axis
(logical name `LAYERS_AXIS`, never sharded), built with `nnx.vmap` and run with
`jax.lax.scan` over its split state: the program holds one layer body whatever
the depth, so compile time no longer grows with the number of layers, and a
pod gathers one layer's weights at a time. Layers with a sliding window
(`cfg.layer_types`) pick their mask per step from a scanned boolean.
`models/hf_weights.py` maps the stacked arrays to and from per-layer names.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from omni_rrm_jax.models import lora as lora_lib

# The logical name of the leading axis of stacked layer parameters (and of a
# stacked KV cache); `sharding/rules.py` maps it to no mesh axis.
LAYERS_AXIS = "layers"
# How `nnx.vmap` adds that axis to the parameters' metadata.
STACK_METADATA = {nnx.PARTITION_NAME: LAYERS_AXIS, "logical_axes": LAYERS_AXIS}


def layer_windows(cfg) -> tuple[int | None, ...]:
  """Each layer's sliding window (None: full attention), from `cfg.layer_types`."""
  types = cfg.layer_types or ("full_attention",) * cfg.num_hidden_layers
  return tuple(cfg.sliding_window if kind == "sliding_attention" else None for kind in types)


def make_layers(cfg, build: Callable[[nnx.Rngs | None], nnx.Module],
                rngs: nnx.Rngs | None):
  """`cfg.num_hidden_layers` layers from `build(rngs)`: a list, or one stacked module.

  Args:
    cfg: a `DecoderConfig` (`num_hidden_layers`, `scan_layers`).
    build: makes one layer from the `rngs`.
    rngs: parameter initialisation keys; each stacked layer draws its own.
  """
  n = cfg.num_hidden_layers
  if not cfg.scan_layers:
    return nnx.List([build(rngs) for _ in range(n)])
  rngs = rngs if rngs is not None else nnx.Rngs(0)

  @nnx.split_rngs(splits=n)
  @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata=STACK_METADATA)
  def stacked(layer_rngs):
    return build(layer_rngs)

  return stacked(rngs)


def _mask_picker(cfg, masks: dict) -> tuple[Callable[[jax.Array], jax.Array], jax.Array]:
  """(mask of a layer given its scanned flag, the per-layer flags [L])."""
  windows = layer_windows(cfg)
  window = next((w for w in windows if w is not None), None)
  sliding_l = jnp.asarray([w is not None for w in windows])
  if len(set(windows)) == 1:
    only = masks[windows[0]]
    return (lambda _: only), sliding_l
  return (lambda sliding: jnp.where(sliding, masks[window], masks[None])), sliding_l


def _dropout_key_per_layer(index):
  """LoRA dropout keys differ per layer: fold the scan step into the active key."""
  key = lora_lib.active_dropout_key()
  return lora_lib.lora_dropout(None if key is None else jax.random.fold_in(key, index))


def run_layers(layers, cfg, x_bte: jax.Array, cos: Any, sin: Any, masks: dict) -> jax.Array:
  """`x_bte` [B, T, E] through every layer (rematerialised in the backward when `cfg.remat`).

  Args:
    layers: from `make_layers`; each is called as `layer(x_bte, cos, sin, mask)`.
    cfg: the `DecoderConfig`.
    x_bte: hidden states entering the first layer.
    cos, sin: rotary tables, as the layers take them.
    masks: window (None for full attention) -> boolean mask [B or 1, 1, T, S],
      for every window of `layer_windows(cfg)`.
  """
  def block(layer, x, mask):
    return layer(x, cos, sin, mask)

  if cfg.remat:
    block = nnx.remat(block)
  if not cfg.scan_layers:
    for layer, window in zip(layers, layer_windows(cfg)):
      x_bte = block(layer, x_bte, masks[window])
    return x_bte
  pick, sliding_l = _mask_picker(cfg, masks)

  def step(x, layer, sliding, index):
    with _dropout_key_per_layer(index):
      return block(layer, x, pick(sliding)), ()

  x_bte, _ = _scan(step, layers, x_bte, sliding_l, jnp.arange(cfg.num_hidden_layers))
  return x_bte


def _scan(step, layers, carry, *xs):
  """`jax.lax.scan` of `step(carry, layer, *x) -> (carry, y)` over the stacked `layers`.

  The layers cross into the scan as their split state (sliced along the
  leading axis) and are merged again per step. Unlike `nnx.scan`, this also
  works on a model merged outside an enclosing trace (the sampler's
  `while_loop` closes over its model); the layers hold no state that a step
  updates, so nothing flows back.
  """
  graphdef, state = nnx.split(layers)

  def body(carry, sliced):
    layer_state, *x = sliced
    return step(carry, nnx.merge(graphdef, layer_state), *x)

  return jax.lax.scan(body, carry, (state, *xs))


def run_layers_cached(layers, cfg, x_bte: jax.Array, cos: Any, sin: Any, masks: dict,
                      keys: Any, values: Any, start: jax.Array):
  """As `run_layers`, each layer attending over (and writing to) its cache slots.

  Args:
    layers, cfg, x_bte, cos, sin, masks: as `run_layers` (masks over cache slots).
    keys, values: the cache's keys [B, K, D, S] and values [B, K, S, D] per
      layer (tuples) for a list of layers, stacked [L, ...] arrays for
      scanned layers.
    start: int32 scalar, the cache slot of the first new token.

  Returns:
    (hidden states [B, T, E], updated keys, updated values), in the layout given.
  """
  if not cfg.scan_layers:
    new_keys, new_values = [], []
    for layer, window, k_bkds, v_bksd in zip(layers, layer_windows(cfg), keys, values):
      x_bte, k_bkds, v_bksd = layer.call_cached(x_bte, cos, sin, masks[window], k_bkds, v_bksd,
                                                start)
      new_keys.append(k_bkds)
      new_values.append(v_bksd)
    return x_bte, tuple(new_keys), tuple(new_values)
  pick, sliding_l = _mask_picker(cfg, masks)

  def step(x, layer, sliding, k_bkds, v_bksd):
    x, k_bkds, v_bksd = layer.call_cached(x, cos, sin, pick(sliding), k_bkds, v_bksd, start)
    return x, (k_bkds, v_bksd)

  x_bte, (keys, values) = _scan(step, layers, x_bte, sliding_l, keys, values)
  return x_bte, keys, values
