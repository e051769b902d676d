"""Per-token log-probabilities of given completions in one forward pass.

GRPO's training side recomputes the log-probs of sampled completions under the
policy being trained (inside the loss, differentiably) and under a frozen
reference; both use `sequence_logprobs`. With the sampler's layout (left-padded
prompt, then the completion), the prompts' media and temperature 1, it
reproduces `SampleOutput.logprobs_bn`.
"""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from omni_rrm_jax.models import multimodal_decode
from omni_rrm_jax.models.media_inputs import media_inputs
from omni_rrm_jax.models.token_logprobs import token_logprobs
from omni_rrm_jax.sampling.sampler import media_arrays, split_model
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, Rules, activation_sharding


def _hidden_states(model, tokens_bt, mask_bt, prompt_len, media, rows_per_example):
  """Final hidden states [B, T, E] with the sampler's positions and the prompts' media."""
  t = tokens_bt.shape[1]
  if not multimodal_decode.is_multimodal(model):
    if media:
      raise ValueError(f"media were given but {type(model).__name__} is a text model")
    position_bt = jnp.maximum(jnp.cumsum(mask_bt, axis=1) - 1, 0)
    return model.model(tokens_bt, mask_bt, position_bt)
  if not media:  # text prompts: every axis counts real tokens, as in `generate`
    position_bt = jnp.maximum(jnp.cumsum(mask_bt, axis=1) - 1, 0)
    return multimodal_decode.hidden_states(model, tokens_bt, mask_bt, position_bt)
  kw = media_inputs(model, media, rows_per_example)
  position_3bt = multimodal_decode.extend_positions(kw["position_ids"], mask_bt[:, :prompt_len],
                                                    t - prompt_len)
  index_bt = jnp.pad(kw["media_index"], ((0, 0), (0, t - prompt_len)), constant_values=-1)
  return multimodal_decode.hidden_states(model, tokens_bt, mask_bt, position_3bt,
                                         kw["media_features"], index_bt)


def sequence_logprobs(model, tokens_bt: jax.Array, mask_bt: jax.Array, prompt_len: int, *,
                      temperature: float = 1.0, media: Mapping[str, jax.Array] | None = None,
                      rows_per_example: int = 1, logits_chunk: int = 0) -> jax.Array:
  """Log-probs [B, T - prompt_len] of tokens `prompt_len:` given everything before them.

  A plain traceable function (call it inside a jitted loss to differentiate
  it). Rotary positions count real tokens only, as in `generate`, so a
  left-padded prompt followed by its completion scores exactly as sampled;
  with media, prompt positions are the media's and the completion continues
  from each prompt's largest + 1.

  Args:
    model: a `CausalLM` or a multimodal model (`multimodal_decode`).
    tokens_bt: int [B, T]: a left-padded prompt of `prompt_len` columns, then
      the completion.
    mask_bt: [B, T] 1 at real tokens (prompt and completion up to its EOS).
    prompt_len: static number of prompt columns.
    temperature: divides the logits first; 1.0 gives the raw policy log-prob
      (what `SampleOutput.logprobs_bn` holds).
    media: the prompts' row-aligned media keys, sequence keys over the
      `prompt_len` prompt columns (as `generate` takes them), one row per
      `rows_per_example` rows of `tokens_bt`.
    rows_per_example: consecutive rows sharing one media row (G for the
      samples of one prompt); the encoders run once per media row.
    logits_chunk: completion positions per vocabulary-head chunk; the [B, N, V]
      logits are never held whole (forward or backward) when it is below N.
      0: all at once.

  Returns:
    float32 [B, T - prompt_len], 0 where the completion mask is 0.
  """
  t = tokens_bt.shape[1]
  if not 0 < prompt_len < t:
    raise ValueError(f"prompt_len must be in (0, {t}), got {prompt_len}")
  mask_bt = mask_bt.astype(jnp.int32)
  h_bte = _hidden_states(model, tokens_bt, mask_bt, prompt_len, media, rows_per_example)
  # Only positions that predict a completion token go through the vocabulary
  # projection, which is the memory-heavy step (chunked by `logits_chunk`).
  out = token_logprobs(model.lm_logits, h_bte[:, prompt_len - 1:t - 1], tokens_bt[:, prompt_len:],
                       chunk=logits_chunk, temperature=temperature)
  return jnp.where(mask_bt[:, prompt_len:] > 0, out.logp_bt, 0.0)


def score_completions(model_or_graphdef_state, prompt_ids_bt, prompt_mask_bt, completion_ids_bn,
                      completion_mask_bn, *, temperature: float = 1.0, mesh: Mesh | None = None,
                      rules: Rules = DEFAULT_RULES, media: Mapping[str, jax.Array] | None = None,
                      rows_per_example: int = 1, logits_chunk: int = 0) -> jax.Array:
  """Jitted `sequence_logprobs` of completions after their (left-padded) prompts.

  Prompt and completion rows must correspond one to one: for `generate`
  output with G samples, pass `jnp.repeat(prompt_ids_bt, G, axis=0)` (and
  the same for the mask), and either the prompts' `media` as given to
  `generate` with `rows_per_example=G`, or media repeated per row. Compiled
  once per shape, like `generate`. `logits_chunk`: see `sequence_logprobs`.

  Returns:
    float32 [B, N] log-probs of the completion tokens, 0 where masked.
  """
  graphdef, state = split_model(model_or_graphdef_state)
  prompt_ids_bt = jnp.asarray(prompt_ids_bt, jnp.int32)
  b, p = prompt_ids_bt.shape
  if b % rows_per_example:
    raise ValueError(f"{b} rows do not split into groups of rows_per_example={rows_per_example}")
  media = media_arrays(media, b // rows_per_example, p)
  tokens_bt = jnp.concatenate([prompt_ids_bt, jnp.asarray(completion_ids_bn, jnp.int32)], axis=1)
  mask_bt = jnp.concatenate([jnp.asarray(prompt_mask_bt, jnp.int32),
                             jnp.asarray(completion_mask_bn, jnp.int32)], axis=1)
  return _score_jit(graphdef, state, tokens_bt, mask_bt, media, prompt_len=p,
                    temperature=float(temperature), mesh=mesh, rules=tuple(rules),
                    rows_per_example=rows_per_example, logits_chunk=int(logits_chunk))


@functools.partial(jax.jit, static_argnums=(0,),
                   static_argnames=("prompt_len", "temperature", "mesh", "rules",
                                    "rows_per_example", "logits_chunk"))
def _score_jit(graphdef, state, tokens_bt, mask_bt, media, *, prompt_len, temperature, mesh,
               rules, rows_per_example, logits_chunk):
  with activation_sharding(mesh, rules):
    return sequence_logprobs(nnx.merge(graphdef, state), tokens_bt, mask_bt, prompt_len,
                             temperature=temperature, media=media,
                             rows_per_example=rows_per_example, logits_chunk=logits_chunk)
