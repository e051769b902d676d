"""The Qwen2 / Qwen3 / Llama decoder and its causal-LM and reward (score) heads."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from omni_rrm_jax.models.attention import (CACHE_AXES, KEY_CACHE_AXES, Attention, causal_mask,
                                          segment_positions)
from omni_rrm_jax.models.config import DecoderConfig
from omni_rrm_jax.models.layer_stack import (LAYERS_AXIS, layer_windows, make_layers,
                                             run_layers, run_layers_cached)
from omni_rrm_jax.models.layers import DenseGeneral, Embed, GatedMLP, RMSNorm
from omni_rrm_jax.models.rotary import rope_cos_sin
from omni_rrm_jax.sharding.rules import constrain


@flax.struct.dataclass
class KVCache:
  """Preallocated keys and values of every layer, for incremental decoding.

  A plain pytree, passed to the model and returned updated, so prefill and
  decode steps are pure functions that jit (and `while_loop`) cleanly.

  All rows write to the same slot per step (`end`), which keeps the update a
  cheap `dynamic_update_slice`; rows of a left-padded batch differ only in
  which slots are valid keys and in their rotary positions.

  Attributes:
    k_bkds: per layer, rotated keys [B, K, D, S] in the compute dtype; for a
      model with `scan_layers`, one stacked array [L, B, K, D, S]. Slots are
      the last axis, so the logits' product reads the keys as its [D, S]
      operand and a decode step copies no cache.
    v_bksd: per layer, values [B, K, S, D] (stacked likewise), the [S, D]
      operand of the values' product.
    key_valid_bs: bool [B, S], True at slots that hold a real token.
    end: int32 scalar, the number of slots written so far (the next slot).
    next_position_b: int32 [B], the rotary position of each row's next token:
      its count of real tokens so far, as transformers' `generate` counts
      positions of left-padded prompts.
  """
  k_bkds: tuple[jax.Array, ...] | jax.Array
  v_bksd: tuple[jax.Array, ...] | jax.Array
  key_valid_bs: jax.Array
  end: jax.Array
  next_position_b: jax.Array

  @property
  def max_length(self) -> int:
    return self.key_valid_bs.shape[1]


def init_cache(cfg: DecoderConfig, batch: int, max_length: int, dtype: Any = None) -> KVCache:
  """An empty cache for `batch` rows of up to `max_length` tokens.

  Args:
    cfg: the decoder config (layer count, key/value heads, head size; with
      `scan_layers` the keys and values are stacked [L, ...] arrays).
    batch: number of rows.
    max_length: slots per row: prompt length plus new tokens.
    dtype: storage dtype of keys and values; defaults to the compute dtype.
  """
  shape = (batch, cfg.num_key_value_heads, max_length, cfg.head_dim)
  key_shape = (batch, cfg.num_key_value_heads, cfg.head_dim, max_length)
  dtype = cfg.dtype if dtype is None else dtype

  def empty(shape, axes):
    if cfg.scan_layers:
      return constrain(jnp.zeros((cfg.num_hidden_layers, *shape), dtype), (LAYERS_AXIS, *axes))
    return tuple(constrain(jnp.zeros(shape, dtype), axes) for _ in range(cfg.num_hidden_layers))

  return KVCache(
      k_bkds=empty(key_shape, KEY_CACHE_AXES),
      v_bksd=empty(shape, CACHE_AXES),
      key_valid_bs=constrain(jnp.zeros((batch, max_length), bool), ("batch", "length")),
      end=jnp.zeros((), jnp.int32),
      next_position_b=jnp.zeros((batch,), jnp.int32))


@flax.struct.dataclass
class ModelOutput:
  """What a model call returns.

  Attributes:
    logits: [B, T, V] for a causal LM, [B, num_labels] for a score head
      ([B, S, num_labels] over packed rows: one score per segment).
    hidden_states: the final normed hidden states [B, T, E].
    cache: the updated `KVCache` when the call was given one, else None.
  """
  logits: jax.Array
  hidden_states: jax.Array | None = None
  cache: KVCache | None = None


class DecoderLayer(nnx.Module):
  """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)).

  The caller passes the layer's mask (causal, or its sliding window's; see
  `layer_stack.layer_windows`).
  """

  def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs | None):
    common = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                  init_std=cfg.initializer_range, rngs=rngs)
    self.self_attn = Attention(
        cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
        qkv_bias=cfg.qkv_bias, o_bias=cfg.o_bias, qk_norm=cfg.qk_norm,
        norm_eps=cfg.rms_norm_eps, implementation=cfg.attention, **common)
    self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, use_bias=cfg.mlp_bias, **common)
    self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps,
                                   param_dtype=cfg.param_dtype, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps,
                                            param_dtype=cfg.param_dtype, rngs=rngs)

  def __call__(self, x_bte, cos_btd, sin_btd, mask_b1ts):
    x_bte = x_bte + self.self_attn(self.input_layernorm(x_bte), cos_btd, sin_btd, mask_b1ts)
    x_bte = x_bte + self.mlp(self.post_attention_layernorm(x_bte))
    return constrain(x_bte, ("batch", "length", "embed"))

  def call_cached(self, x_bte, cos_btd, sin_btd, mask_b1ts, cache_k_bkds, cache_v_bksd, start):
    """As `__call__`, attending over (and writing to) this layer's cache slots."""
    attn_bte, cache_k_bkds, cache_v_bksd = self.self_attn.call_cached(
        self.input_layernorm(x_bte), cos_btd, sin_btd, mask_b1ts, cache_k_bkds, cache_v_bksd,
        start)
    x_bte = x_bte + attn_bte
    x_bte = x_bte + self.mlp(self.post_attention_layernorm(x_bte))
    return constrain(x_bte, ("batch", "length", "embed")), cache_k_bkds, cache_v_bksd


class Decoder(nnx.Module):
  """Token embedding, the stack of decoder layers and the final norm.

  `layers` is a list of `DecoderLayer`s, or with `cfg.scan_layers` one
  stacked `DecoderLayer` run in a scan (see `layer_stack.py`).
  """

  def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs | None):
    self.cfg = cfg
    self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype,
                              param_dtype=cfg.param_dtype, init_std=cfg.initializer_range,
                              rngs=rngs)
    self.layers = make_layers(cfg, lambda r: DecoderLayer(cfg, r), rngs)
    self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=cfg.param_dtype,
                        rngs=rngs)

  def __call__(self, input_ids=None, attention_mask=None, position_ids=None,
               inputs_embeds=None, segment_ids=None):
    """Final normed hidden states [B, T, E] of a full-sequence forward.

    Args:
      input_ids: [B, T] token ids (or `inputs_embeds` [B, T, E]).
      attention_mask: [B, T] 1 at real tokens, 0 at padding.
      position_ids: [B, T] rotary positions; by default the sequence index,
        or with `segment_ids` the index within each segment.
      inputs_embeds: [B, T, E], instead of `input_ids`.
      segment_ids: [B, T] packed rows: 0 at padding, 1..k for the examples
        packed one after another in a row; attention stays causal within
        each segment.
    """
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("pass exactly one of input_ids or inputs_embeds")
    x_bte = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
    x_bte = constrain(x_bte.astype(self.cfg.dtype), ("batch", "length", "embed"))
    b, t = x_bte.shape[:2]
    index_t = jnp.arange(t)
    if position_ids is None:
      position_ids = (jnp.broadcast_to(index_t, (b, t)) if segment_ids is None
                      else segment_positions(segment_ids))
    cos, sin = rope_cos_sin(position_ids, self.cfg.rope_dict, self.cfg.head_dim,
                            self.cfg.max_position_embeddings)
    windows = set(layer_windows(self.cfg))
    masks = {w: causal_mask(index_t, index_t, attention_mask, w, segment_ids) for w in windows}
    x_bte = run_layers(self.layers, self.cfg, x_bte, cos, sin, masks)
    return self.norm(x_bte)

  def call_cached(self, cache: KVCache, input_ids=None, attention_mask=None,
                  position_ids=None, inputs_embeds=None) -> tuple[jax.Array, KVCache]:
    """Runs T new tokens per row on top of `cache` (prefill or one decode step).

    The new tokens take cache slots [cache.end, cache.end + T) in every row.
    Masks are built from slot indices (causal, sliding window) and the cache's
    key validity, as transformers builds them from cache positions. The
    caller keeps `cache.end + T <= cache.max_length` (the slot index is traced,
    and an out-of-range write would be clamped, not refused). With a "dynamic"
    (NTK) RoPE, each call scales by its own largest position and cached keys
    keep their angles, as in transformers' incremental decoding.

    Args:
      cache: the `KVCache` so far (empty for a prefill).
      input_ids: [B, T] new token ids (or `inputs_embeds` [B, T, E]).
      attention_mask: [B, T] 1 at real new tokens, 0 at padding; all real
        when None. Padded slots are never attended to.
      position_ids: [B, T] rotary positions; by default each row continues
        from `cache.next_position_b`, counting real tokens only, so a
        left-padded prompt starts at position 0 at its first real token.
      inputs_embeds: [B, T, E], instead of `input_ids`.

    Returns:
      (final normed hidden states [B, T, E], the updated cache).
    """
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("pass exactly one of input_ids or inputs_embeds")
    x_bte = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
    x_bte = constrain(x_bte.astype(self.cfg.dtype), ("batch", "length", "embed"))
    b, t = x_bte.shape[:2]
    if t > cache.max_length:
      raise ValueError(f"{t} new tokens do not fit a cache of {cache.max_length} slots")
    if attention_mask is None:
      valid_bt = jnp.ones((b, t), bool)
    else:
      valid_bt = attention_mask.astype(bool)
    if position_ids is None:
      position_ids = continued_positions(cache, valid_bt)
    cos, sin = rope_cos_sin(position_ids, self.cfg.rope_dict, self.cfg.head_dim,
                            self.cfg.max_position_embeddings)
    x_bte, cache = run_cached_layers(
        self.layers, self.cfg, x_bte, cos, sin, valid_bt, cache,
        cache.next_position_b + jnp.sum(valid_bt, axis=1, dtype=jnp.int32))
    return self.norm(x_bte), cache


def continued_positions(cache: KVCache, valid_bt: jax.Array) -> jax.Array:
  """[B, T] positions of new tokens continuing each row from
  `cache.next_position_b`, counting real tokens only."""
  counted_bt = jnp.cumsum(valid_bt, axis=1, dtype=jnp.int32)
  # Padding gets position 0: it is never a valid key, so its angle is moot.
  return jnp.maximum(cache.next_position_b[:, None] + counted_bt - 1, 0)


def run_cached_layers(layers, cfg: DecoderConfig, x_bte: jax.Array, cos: jax.Array,
                      sin: jax.Array, valid_bt: jax.Array, cache: KVCache,
                      next_position_b: jax.Array) -> tuple[jax.Array, KVCache]:
  """Runs T new tokens through `layers`, appending their keys and values to
  `cache` at `cache.end`.

  Args:
    layers: the `DecoderLayer`s (a list, one per cache entry, or stacked).
    cfg: their `DecoderConfig` (sliding windows, `scan_layers`).
    x_bte: [B, T, E] the new tokens' embeddings.
    cos, sin: the new tokens' rotary tables (1-D or M-RoPE, as the layers take).
    valid_bt: bool [B, T] real new tokens; padded slots are never attended to.
    cache: the `KVCache` so far.
    next_position_b: [B] the position each row continues from afterwards.

  Returns:
    (hidden states [B, T, E] before the final norm, the updated cache).
  """
  t = x_bte.shape[1]
  start = cache.end
  zero = jnp.zeros((), jnp.int32)
  key_valid_bs = jax.lax.dynamic_update_slice(cache.key_valid_bs, valid_bt, (zero, start))
  key_valid_bs = constrain(key_valid_bs, ("batch", "length"))
  q_slot_t = start + jnp.arange(t, dtype=jnp.int32)
  k_slot_s = jnp.arange(cache.max_length, dtype=jnp.int32)
  windows = set(layer_windows(cfg))
  masks = {w: causal_mask(q_slot_t, k_slot_s, key_valid_bs, w) for w in windows}
  x_bte, keys, values = run_layers_cached(layers, cfg, x_bte, cos, sin, masks, cache.k_bkds,
                                          cache.v_bksd, start)
  cache = cache.replace(k_bkds=keys, v_bksd=values, key_valid_bs=key_valid_bs,
                        end=start + t, next_position_b=next_position_b)
  return x_bte, cache


def segment_last_index(segment_ids_bt: jax.Array, num_segments: int) -> jax.Array:
  """[B, num_segments] index of the last token of segments 1..num_segments per
  row (0 for a segment the row does not hold)."""
  t = segment_ids_bt.shape[1]
  wanted_s = jnp.arange(1, num_segments + 1, dtype=segment_ids_bt.dtype)
  in_bst = segment_ids_bt[:, None, :] == wanted_s[None, :, None]
  return jnp.argmax(jnp.arange(t, dtype=jnp.int32) * in_bst, axis=-1).astype(jnp.int32)


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
               inputs_embeds=None, cache: KVCache | None = None,
               segment_ids=None) -> ModelOutput:
    """Logits of every position.

    `segment_ids` [B, T] marks packed rows (see `Decoder.__call__`).

    With a `cache` (see `init_cache` and `Decoder.call_cached`), the tokens
    are appended to it and the output carries the updated cache; without
    one, this is the plain full-sequence forward.
    """
    if cache is None:
      h_bte = self.model(input_ids, attention_mask, position_ids, inputs_embeds, segment_ids)
    else:
      if segment_ids is not None:
        raise ValueError("packed rows (segment_ids) are for full-sequence forwards, not a cache")
      h_bte, cache = self.model.call_cached(cache, input_ids, attention_mask, position_ids,
                                            inputs_embeds)
    return ModelOutput(logits=self.lm_logits(h_bte), hidden_states=h_bte, cache=cache)

  def lm_logits(self, h_bte: jax.Array) -> jax.Array:
    """Vocabulary logits [B, T, V] of final hidden states (e.g. of a slice of them)."""
    if self.lm_head is None:
      logits = self.model.embed_tokens.attend(h_bte)
    else:
      logits = self.lm_head(h_bte)
    return constrain(logits, ("batch", "length", "vocab"))


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
               inputs_embeds=None, segment_ids=None, num_segments: int | None = None
               ) -> ModelOutput:
    """Scores [B, num_labels], or [B, num_segments, num_labels] for packed rows.

    With `segment_ids` (see `Decoder.__call__`) each of segments
    1..`num_segments` of a row is scored at its own last token; a segment a
    row does not hold gets an arbitrary score (the batch marks it invalid).
    """
    h_bte = self.model(input_ids, attention_mask, position_ids, inputs_embeds, segment_ids)
    b, t = h_bte.shape[:2]
    if segment_ids is not None:
      if num_segments is None:
        raise ValueError("packed rows (segment_ids) need num_segments, the segments per row")
      idx_bs = segment_last_index(segment_ids, num_segments)
      pooled_bse = jnp.take_along_axis(h_bte, idx_bs[:, :, None], axis=1)
      return ModelOutput(logits=self.score(pooled_bse), hidden_states=h_bte)
    idx_b = last_token_index(input_ids, self.cfg.pad_token_id, b, t)
    pooled_be = jnp.take_along_axis(h_bte, idx_b[:, None, None], axis=1)[:, 0]
    # Scoring only the pooled token equals transformers' score-then-pool.
    return ModelOutput(logits=self.score(pooled_be), hidden_states=h_bte)


