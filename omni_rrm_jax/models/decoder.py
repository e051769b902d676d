"""The Qwen2 / Qwen3 / Llama decoder and its causal-LM and reward (score) heads."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from omni_rrm_jax.models.attention import Attention, causal_mask
from omni_rrm_jax.models.config import DecoderConfig
from omni_rrm_jax.models.layers import DenseGeneral, Embed, GatedMLP, RMSNorm
from omni_rrm_jax.models.rotary import rope_cos_sin
from omni_rrm_jax.sharding.rules import constrain


@flax.struct.dataclass
class ModelOutput:
  """What a model call returns.

  Attributes:
    logits: [B, T, V] for a causal LM, [B, num_labels] for a score head.
    hidden_states: the final normed hidden states [B, T, E].
  """
  logits: jax.Array
  hidden_states: jax.Array | None = None


class DecoderLayer(nnx.Module):
  """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: DecoderConfig, layer_idx: int, rngs: nnx.Rngs | None):
    layer_type = cfg.layer_types[layer_idx] if cfg.layer_types else "full_attention"
    self.sliding_window = cfg.sliding_window if layer_type == "sliding_attention" else None
    common = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                  init_std=cfg.initializer_range, rngs=rngs)
    self.self_attn = Attention(
        cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
        qkv_bias=cfg.qkv_bias, o_bias=cfg.o_bias, qk_norm=cfg.qk_norm,
        norm_eps=cfg.rms_norm_eps, **common)
    self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, use_bias=cfg.mlp_bias, **common)
    self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps,
                                   param_dtype=cfg.param_dtype, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps,
                                            param_dtype=cfg.param_dtype, rngs=rngs)

  def __call__(self, x_bte, cos_btd, sin_btd, masks):
    mask = masks[self.sliding_window]
    x_bte = x_bte + self.self_attn(self.input_layernorm(x_bte), cos_btd, sin_btd, mask)
    x_bte = x_bte + self.mlp(self.post_attention_layernorm(x_bte))
    return constrain(x_bte, ("batch", "length", "embed"))


class Decoder(nnx.Module):
  """Token embedding, the stack of decoder layers and the final norm."""

  def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs | None):
    self.cfg = cfg
    self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype,
                              param_dtype=cfg.param_dtype, init_std=cfg.initializer_range,
                              rngs=rngs)
    self.layers = nnx.List([DecoderLayer(cfg, i, rngs) for i in range(cfg.num_hidden_layers)])
    self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=cfg.param_dtype,
                        rngs=rngs)

  def __call__(self, input_ids=None, attention_mask=None, position_ids=None,
               inputs_embeds=None):
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("pass exactly one of input_ids or inputs_embeds")
    x_bte = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
    x_bte = constrain(x_bte.astype(self.cfg.dtype), ("batch", "length", "embed"))
    b, t = x_bte.shape[:2]
    index_t = jnp.arange(t)
    if position_ids is None:
      position_ids = jnp.broadcast_to(index_t, (b, t))
    cos, sin = rope_cos_sin(position_ids, self.cfg.rope_dict, self.cfg.head_dim,
                            self.cfg.max_position_embeddings)
    windows = {layer.sliding_window for layer in self.layers}
    masks = {w: causal_mask(index_t, index_t, attention_mask, w) for w in windows}

    def block(layer, x):
      return layer(x, cos, sin, masks)

    if self.cfg.remat:
      block = nnx.remat(block)
    for layer in self.layers:
      x_bte = block(layer, x_bte)
    return self.norm(x_bte)


def last_token_index(input_ids_bt: jax.Array | None, pad_token_id: int | None,
                     batch: int, length: int) -> jax.Array:
  """Index of the rightmost token that is not padding, per row.

  This is the pooling rule of transformers' sequence classifiers: it handles
  left and right padding alike, and without a pad token it takes the last
  position (which is only unambiguous for a batch of one).
  """
  if pad_token_id is None or input_ids_bt is None:
    if pad_token_id is None and batch != 1:
      raise ValueError("a score head needs config.pad_token_id to pool batches larger than 1")
    return jnp.full((batch,), length - 1, jnp.int32)
  non_pad_bt = (input_ids_bt != pad_token_id).astype(jnp.int32)
  return jnp.argmax(jnp.arange(length, dtype=jnp.int32) * non_pad_bt, axis=-1)


class CausalLM(nnx.Module):
  """`*ForCausalLM`: decoder plus a vocabulary projection (tied or separate)."""

  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs | None = None):
    self.cfg = cfg
    self.model = Decoder(cfg, rngs)
    if cfg.tie_word_embeddings:
      self.lm_head = None
    else:
      self.lm_head = DenseGeneral((cfg.hidden_size,), (cfg.vocab_size,),
                                  kernel_axes=("embed", "vocab"), dtype=cfg.dtype,
                                  param_dtype=cfg.param_dtype, init_std=cfg.initializer_range,
                                  rngs=rngs)

  def __call__(self, input_ids=None, attention_mask=None, position_ids=None,
               inputs_embeds=None) -> ModelOutput:
    h_bte = self.model(input_ids, attention_mask, position_ids, inputs_embeds)
    if self.lm_head is None:
      logits = self.model.embed_tokens.attend(h_bte)
    else:
      logits = self.lm_head(h_bte)
    logits = constrain(logits, ("batch", "length", "vocab"))
    return ModelOutput(logits=logits, hidden_states=h_bte)


class SequenceClassifier(nnx.Module):
  """`*ForSequenceClassification`: decoder plus a bias-free score head pooled
  at the last non-padding token. With `num_labels=1` this is a scalar reward
  model."""

  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs | None = None):
    self.cfg = cfg
    self.model = Decoder(cfg, rngs)
    self.score = DenseGeneral((cfg.hidden_size,), (cfg.num_labels,),
                              kernel_axes=("embed", "labels"), dtype=cfg.dtype,
                              param_dtype=cfg.param_dtype, init_std=cfg.initializer_range,
                              rngs=rngs)

  def __call__(self, input_ids=None, attention_mask=None, position_ids=None,
               inputs_embeds=None) -> ModelOutput:
    h_bte = self.model(input_ids, attention_mask, position_ids, inputs_embeds)
    b, t = h_bte.shape[:2]
    idx_b = last_token_index(input_ids, self.cfg.pad_token_id, b, t)
    pooled_be = jnp.take_along_axis(h_bte, idx_b[:, None, None], axis=1)[:, 0]
    # Scoring only the pooled token equals transformers' score-then-pool.
    return ModelOutput(logits=self.score(pooled_be), hidden_states=h_bte)


