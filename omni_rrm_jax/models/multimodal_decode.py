"""The text side of a multimodal model once its media are encoded: full and KV-cached forwards.

Works for any model whose trunk is the M-RoPE `qwen2_5_vl.TextModel` (held as
`.model`) with an `.lm_logits` head, i.e. Qwen2.5-VL and the Qwen2.5-Omni
thinker alike, so scoring and sampling need no per-architecture code:

    kw = media_inputs(model, batch)                    # encoders, once per row
    h_bte = hidden_states(model, ids_bt, mask_bt, **kw)          # scoring
    out = call_cached(model, cache, ids_bt, mask_bt, **kw)       # prefill
    out = call_cached(model, out.cache, next_b1)                 # decode

Positions at decode: each row continues from one past the position of its
prompt's last token, the same id on all three axes (`extend_positions` for a
full forward, `TextModel.call_cached` for the cache). That is where
`rope_index` places text appended to the prompt, so a sampled completion sits
where training puts the same text, and what transformers' `generate` does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from omni_rrm_jax.models.decoder import KVCache, ModelOutput
from omni_rrm_jax.models.qwen2_5_vl import TextModel


def is_multimodal(model) -> bool:
  """Whether `model` decodes with M-RoPE positions (a `TextModel` trunk)."""
  return isinstance(getattr(model, "model", None), TextModel)


def _check(model) -> None:
  if not is_multimodal(model):
    raise TypeError(f"{type(model).__name__} has no multimodal text trunk (.model is not a "
                    "qwen2_5_vl.TextModel)")


def hidden_states(model, input_ids: jax.Array, attention_mask: jax.Array | None,
                  position_ids: jax.Array, media_features: jax.Array | None = None,
                  media_index: jax.Array | None = None) -> jax.Array:
  """Final normed hidden states [B, T, E] of a full (uncached) forward.

  Args:
    model: a model with a `TextModel` trunk.
    input_ids: int [B, T] with media placeholders.
    attention_mask: [B, T] 1 at real tokens.
    position_ids: int [3, B, T] M-RoPE ids (or [B, T], used on all three axes).
    media_features: [B, M, E] each row's media tokens (`media_inputs`).
    media_index: int [B, T], which of its row's media tokens each token takes,
      -1 for text.
  """
  _check(model)
  x_bte = model.model.embed(input_ids, media_features, media_index)
  b, t = input_ids.shape
  position_ids = jnp.asarray(position_ids, jnp.int32)
  if position_ids.ndim == 2:
    position_ids = jnp.broadcast_to(position_ids, (3, b, t))
  return model.model(x_bte, position_ids, attention_mask)


def call_cached(model, cache: KVCache, input_ids: jax.Array, attention_mask=None,
                position_ids=None, media_features=None, media_index=None) -> ModelOutput:
  """Logits [B, T, V] of T new tokens appended to `cache`, and the updated cache.

  The generic form of `Qwen2_5_VLForConditionalGeneration.call_cached`;
  arguments as `TextModel.call_cached`.
  """
  _check(model)
  h_bte, cache = model.model.call_cached(cache, input_ids, attention_mask, position_ids,
                                         media_features=media_features,
                                         media_index=media_index)
  return ModelOutput(logits=model.lm_logits(h_bte), hidden_states=h_bte, cache=cache)


def extend_positions(position_ids_3bp: jax.Array, prompt_mask_bp: jax.Array,
                     num_new: int) -> jax.Array:
  """M-RoPE ids [3, B, P + num_new] of a prompt followed by `num_new` generated tokens.

  Generated token i of a row takes (position of its prompt's last real
  token) + 1 + i on every axis, as `generate` places it.

  Args:
    position_ids_3bp: int [3, B, P] the prompts' ids.
    prompt_mask_bp: [B, P] 1 at the prompts' real tokens.
    num_new: tokens after the prompt (static).
  """
  p = prompt_mask_bp.shape[1]
  last_b = jnp.argmax(jnp.arange(p, dtype=jnp.int32) * prompt_mask_bp.astype(jnp.int32), axis=1)
  next_b = jnp.take_along_axis(jnp.max(position_ids_3bp, axis=0), last_b[:, None],
                               axis=1)[:, 0] + 1
  new_bn = next_b[:, None] + jnp.arange(num_new, dtype=jnp.int32)[None]
  new_3bn = jnp.broadcast_to(new_bn, (3, *new_bn.shape))
  return jnp.concatenate([position_ids_3bp.astype(jnp.int32), new_3bn], axis=2)
