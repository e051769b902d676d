"""Jitted batch generation: prefill a KV cache, then decode one token per row per step.

    params = SamplingParams(temperature=1.0, max_new_tokens=256, num_samples=8)
    out = generate(model, prompt_ids_bt, prompt_mask_bt, params, jax.random.key(0),
                   eos_ids=(eos_id,))
    out.tokens_bn, out.logprobs_bn, out.mask_bn   # rows: prompt 0 x G, prompt 1 x G, ...

Prompts are left-padded (real tokens flush right, see `prompts.left_pad`), so
every row's next token goes to the same cache slot. Prefill and the whole decode
loop run under one `jax.jit`; the loop is a `lax.while_loop` that stops as soon
as every row has finished. The compiled program is cached per (prompt shape,
media shapes, `SamplingParams`, EOS ids, model structure), so callers should
bucket prompt lengths (`core.buckets.round_up`) and media sizes to keep the
number of compilations small.

Multimodal models (Qwen2.5-VL, the Qwen2.5-Omni thinker) take their prompts'
media as row-aligned batch arrays (`media=`, the keys `models.media_inputs`
reads, aligned with the left-padded prompts: `prompts.left_pad_media`). Decoding
continues each row's M-RoPE positions after its prompt's last token
(`models.multimodal_decode`).

Each distinct prompt is prefilled once, encoders included: its filled cache
rows and next-token logits are repeated for its G samples
(`shared_prefill.repeat_cache_rows`), and every sample draws its first token
on its own row. Prefilling P rows instead of P * G may round the last bits
differently (XLA picks matrix kernels by shape); tokens and log-probs
otherwise equal prefilling every sample.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from omni_rrm_jax.core.batch_contract import MEDIA_KEYS
from omni_rrm_jax.models.decoder import init_cache
from omni_rrm_jax.models.media_inputs import media_inputs
from omni_rrm_jax.sampling.logit_filters import choose_tokens
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.shared_prefill import repeat_cache_rows
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, Rules, activation_sharding, constrain


@flax.struct.dataclass
class SampleOutput:
  """Completions of a batch of prompts, `num_samples` consecutive rows per prompt.

  Row r is sample `r % G` of prompt `r // G` (G = `num_samples`), so GRPO
  groups are contiguous.

  Attributes:
    tokens_bn: int32 [B*G, N] generated ids; after a row's EOS, the pad id.
    logprobs_bn: float32 [B*G, N] log-probability of each generated token
      under the raw policy, i.e. log_softmax(logits) at temperature 1 before
      any top-k / top-p truncation, whatever the sampling params. This is what
      a GRPO loss recomputes (`sequence_logprobs`) as the old / reference
      policy log-prob. 0 where `mask_bn` is 0.
    mask_bn: int32 [B*G, N] 1 up to and including a row's EOS token, 0 after.
    lengths_b: int32 [B*G] completion lengths (`mask_bn.sum(-1)`).
    truncated_b: bool [B*G] True for rows that hit `max_new_tokens` without an EOS.
  """
  tokens_bn: jax.Array
  logprobs_bn: jax.Array
  mask_bn: jax.Array
  lengths_b: jax.Array
  truncated_b: jax.Array


def split_model(model_or_graphdef_state) -> tuple[nnx.GraphDef, nnx.State]:
  """(graphdef, state) of an NNX model, or passes such a pair through."""
  if isinstance(model_or_graphdef_state, nnx.Module):
    return nnx.split(model_or_graphdef_state)
  graphdef, state = model_or_graphdef_state
  return graphdef, state


def _check_prompts(prompt_ids_bt, prompt_mask_bt) -> None:
  if prompt_ids_bt.ndim != 2 or prompt_ids_bt.shape != prompt_mask_bt.shape:
    raise ValueError(f"prompt ids {prompt_ids_bt.shape} and mask {prompt_mask_bt.shape} "
                     "must both be [B, T]")
  if isinstance(prompt_mask_bt, jax.core.Tracer):
    return
  # A batch spread over several processes is checked where its rows live:
  # each process looks at its own shards (their row offsets name the rows).
  if isinstance(prompt_mask_bt, jax.Array) and not prompt_mask_bt.is_fully_addressable:
    shards = [(s.index[0].start or 0, np.asarray(s.data))
              for s in prompt_mask_bt.addressable_shards]
  else:
    shards = [(0, np.asarray(prompt_mask_bt))]
  for start, mask in shards:
    if not mask[:, -1].all():
      rows = (start + np.flatnonzero(~mask[:, -1].astype(bool))[:5]).tolist()
      raise ValueError(f"prompts must be left-padded (last column real); rows {rows} end in "
                       "padding")


def media_arrays(media: Mapping[str, jax.Array] | None, batch: int,
                 length: int) -> dict[str, jax.Array] | None:
  """The device keys of a prompt batch's media (None without), checked against [B, T].

  Host-only keys (such as `vision_grid_thw`) are dropped, so a collated batch
  can be passed whole.
  """
  if not media:
    return None
  media = {k: jnp.asarray(v) for k, v in media.items() if k in MEDIA_KEYS}
  want = {"media_index": (batch, length), "position_ids": (batch, 3, length)}
  for key, shape in want.items():
    if key not in media:
      raise ValueError(f"media without {key!r}: pass the row-aligned media batch keys "
                       "(models.media_inputs)")
    if media[key].shape != shape:
      raise ValueError(f"media {key} has shape {media[key].shape}, expected {shape} to match "
                       "the left-padded prompts")
  bad = {k: v.shape for k, v in media.items() if v.shape[0] != batch}
  if bad:
    raise ValueError(f"media keys need one row per prompt ({batch}), got {bad}")
  return media


def generate(model_or_graphdef_state, prompt_ids_bt, prompt_mask_bt, params: SamplingParams,
             rng: jax.Array | int, *, eos_ids: Sequence[int], pad_id: int = 0,
             mesh: Mesh | None = None, rules: Rules = DEFAULT_RULES,
             media: Mapping[str, jax.Array] | None = None,
             prompt_keys: jax.Array | np.ndarray | None = None) -> SampleOutput:
  """Samples `params.num_samples` completions for each left-padded prompt.

  Args:
    model_or_graphdef_state: a causal LM (`CausalLM`, or a multimodal model
      such as `Qwen2_5_VLForConditionalGeneration`) or its `nnx.split` pair.
    prompt_ids_bt: int [B, T] prompt ids, left-padded.
    prompt_mask_bt: [B, T] 1 at real tokens, 0 at the left padding. Rotary
      positions count from each row's first real token, as transformers'
      `generate` does (multimodal prompts: see `media`).
    params: the `SamplingParams`.
    rng: a PRNG key (or an int seed). Step i draws with `fold_in(rng, i)`, so
      the output is a function of (rng, inputs, params) only; each row's draw
      depends on its row of the global batch, not on which process holds it.
    eos_ids: a row finishes at the first of these ids it generates (the EOS
      token is part of the completion and of its mask).
    pad_id: the id written after a row has finished.
    mesh: when given, activations and the cache are constrained to it by
      their logical axis names (the model state should be sharded on it too).
    rules: the logical -> mesh axis table.
    media: the prompts' media as row-aligned batch arrays, one row per prompt
      (`vision_patches`, the vision layout, `position_ids` [B, 3, T],
      `media_index` [B, T], and the audio keys for the Omni thinker; see
      `models.media_inputs`), with the sequence keys aligned to the
      left-padded prompts. The encoders run once per prompt, not per sample.
    prompt_keys: int [B], one number per prompt that names it (e.g. its
      record's index), placed like the prompts. When given, sample j of a
      prompt draws at step i with `fold_in(fold_in(fold_in(rng, key), j), i)`:
      its completion depends on its prompt, key and `rng` only, not on which
      other prompts share the batch or at which row it sits (up to the last
      bits of the logits, which XLA may round differently for other batch
      shapes). Without them, step i draws the whole batch with `fold_in(rng, i)`.

  Returns:
    A `SampleOutput` with `B * num_samples` rows and `max_new_tokens` columns.
  """
  graphdef, state = split_model(model_or_graphdef_state)
  prompt_ids_bt = jnp.asarray(prompt_ids_bt, jnp.int32)
  prompt_mask_bt = jnp.asarray(prompt_mask_bt, jnp.int32)
  _check_prompts(prompt_ids_bt, prompt_mask_bt)
  media = media_arrays(media, *prompt_ids_bt.shape)
  if isinstance(rng, int):
    # The key is made inside the jit from the seed: a key made here would sit
    # on one local device, which a jit over several processes cannot take.
    rng = np.asarray(rng, np.uint32)
  eos_ids = tuple(sorted({int(e) for e in eos_ids}))
  if prompt_keys is not None:
    prompt_keys = jnp.asarray(prompt_keys, jnp.int32)
    if prompt_keys.shape != prompt_ids_bt.shape[:1]:
      raise ValueError(f"prompt_keys has shape {prompt_keys.shape}; one key per prompt "
                       f"({prompt_ids_bt.shape[0]}) is needed")
  return _generate_jit(graphdef, state, prompt_ids_bt, prompt_mask_bt, rng, media,
                       prompt_keys, params=params, eos_ids=eos_ids, pad_id=int(pad_id),
                       mesh=mesh, rules=tuple(rules))


@functools.partial(jax.jit, static_argnums=(0,),
                   static_argnames=("params", "eos_ids", "pad_id", "mesh", "rules"))
def _generate_jit(graphdef, state, prompt_ids_bt, prompt_mask_bt, rng, media, prompt_keys_p, *,
                  params, eos_ids, pad_id, mesh, rules):
  if not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key(rng)  # an int seed (`generate`)
  with activation_sharding(mesh, rules):
    model = nnx.merge(graphdef, state)
    return _sample(model, prompt_ids_bt, prompt_mask_bt, rng, params, eos_ids, pad_id, media,
                   prompt_keys_p)


def _empty_cache(cfg, length: int, rows: int):
  return init_cache(cfg, rows, length)


def _token_logprob(logits_bv: jax.Array, token_b: jax.Array) -> jax.Array:
  """log_softmax(logits)[token] per row, without writing out the [B, V] log-softmax.

  The same float32 operations as `jax.nn.log_softmax` (shift by the row max,
  log of the sum of exponentials), applied to the chosen logit only, so the
  values are bitwise those of the full log-softmax.
  """
  logits_bv = logits_bv.astype(jnp.float32)
  max_b1 = jnp.max(logits_bv, axis=-1, keepdims=True)
  log_sum_b = jnp.log(jnp.sum(jnp.exp(logits_bv - max_b1), axis=-1))
  chosen_b = jnp.take_along_axis(logits_bv, token_b[:, None], axis=-1)[:, 0]
  return (chosen_b - max_b1[:, 0]) - log_sum_b


def _row_keys(rng: jax.Array, prompt_keys_p: jax.Array, g: int) -> jax.Array:
  """A typed key per row [P * G]: `fold_in(fold_in(rng, prompt key), sample)`."""
  keys_b = jnp.repeat(prompt_keys_p, g)
  samples_b = jnp.tile(jnp.arange(g, dtype=jnp.int32), prompt_keys_p.shape[0])
  return jax.vmap(lambda k, j: jax.random.fold_in(jax.random.fold_in(rng, k), j))(
      keys_b, samples_b)


def _sample(model, prompt_ids_pt, prompt_mask_pt, rng, params: SamplingParams,
            eos_ids: tuple[int, ...], pad_id: int, media,
            prompt_keys_p: jax.Array | None = None) -> SampleOutput:
  g, n = params.num_samples, params.max_new_tokens
  p, t = prompt_ids_pt.shape
  b = p * g
  if prompt_keys_p is not None:
    row_keys_b = _row_keys(rng, prompt_keys_p, g)
    step_key = lambda i: jax.vmap(jax.random.fold_in, (0, None))(row_keys_b, i)  # noqa: E731
  else:
    step_key = lambda i: jax.random.fold_in(rng, i)  # noqa: E731
  cfg = model.model.cfg
  eos_e = jnp.asarray(eos_ids, jnp.int32)

  def is_eos(token_b):
    return jnp.any(token_b[:, None] == eos_e[None, :], axis=-1)

  def next_logits(h_bte):
    return model.lm_logits(h_bte[:, -1:])[:, 0]

  # Prefill the P distinct prompts once (their media encoded once), then give
  # each prompt's cache rows and next-token logits to its G samples.
  media_kw = media_inputs(model, media) if media else {}
  ids_pt = constrain(prompt_ids_pt, ("batch", "length"))
  mask_pt = constrain(prompt_mask_pt, ("batch", "length"))
  # The last sampled token is never fed back, so t + n - 1 slots suffice.
  empty_cache = functools.partial(_empty_cache, cfg, t + n - 1)
  # Text decoders and the multimodal `TextModel` share this cached call; the
  # cache carries each row's next position into the decode steps.
  h_pte, cache = model.model.call_cached(empty_cache(p), ids_pt, attention_mask=mask_pt,
                                         **media_kw)
  cache = repeat_cache_rows(cache, p, g, empty_cache)
  logits_bv = constrain(jnp.repeat(next_logits(h_pte), g, axis=0), ("batch", "vocab"))

  token_b = choose_tokens(logits_bv, step_key(0), params)
  tokens_bn = jnp.full((b, n), pad_id, jnp.int32).at[:, 0].set(token_b)
  logprobs_bn = jnp.zeros((b, n), jnp.float32).at[:, 0].set(_token_logprob(logits_bv, token_b))
  mask_bn = jnp.zeros((b, n), jnp.int32).at[:, 0].set(1)
  done_b = is_eos(token_b)

  def cond(carry):
    step, _, _, _, _, _, done_b = carry
    return (step < n) & ~jnp.all(done_b)

  def body(carry):
    step, cache, token_b, tokens_bn, logprobs_bn, mask_bn, done_b = carry
    h_bte, cache = model.model.call_cached(cache, token_b[:, None])
    logits_bv = next_logits(h_bte)
    new_b = choose_tokens(logits_bv, step_key(step), params)
    live_b = ~done_b
    logp_b = jnp.where(live_b, _token_logprob(logits_bv, new_b), 0.0)
    new_b = jnp.where(live_b, new_b, pad_id)
    zero = jnp.zeros((), jnp.int32)
    tokens_bn = jax.lax.dynamic_update_slice(tokens_bn, new_b[:, None], (zero, step))
    logprobs_bn = jax.lax.dynamic_update_slice(logprobs_bn, logp_b[:, None], (zero, step))
    mask_bn = jax.lax.dynamic_update_slice(mask_bn, live_b[:, None].astype(jnp.int32),
                                           (zero, step))
    done_b = done_b | (live_b & is_eos(new_b))
    return step + 1, cache, new_b, tokens_bn, logprobs_bn, mask_bn, done_b

  carry = (jnp.ones((), jnp.int32), cache, token_b, tokens_bn, logprobs_bn, mask_bn, done_b)
  _, _, _, tokens_bn, logprobs_bn, mask_bn, done_b = jax.lax.while_loop(cond, body, carry)
  return SampleOutput(tokens_bn=tokens_bn, logprobs_bn=logprobs_bn, mask_bn=mask_bn,
                      lengths_b=jnp.sum(mask_bn, axis=-1, dtype=jnp.int32), truncated_b=~done_b)


def compile_count() -> int:
  """Programs compiled so far by `generate` (one per distinct shape and params).

  Reads jit's private cache size; meant for tests and diagnostics.
  """
  return _generate_jit._cache_size()
