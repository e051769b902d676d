"""Per-token log-probabilities of given completions in one forward pass.

GRPO's training side recomputes the log-probs of sampled completions under the
policy being trained (inside the loss, differentiably) and under a frozen
reference; both use `sequence_logprobs`. With the sampler's layout (left-padded
prompt, then the completion) and temperature 1, it reproduces
`SampleOutput.logprobs_bn`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from omni_rrm_jax.sampling.sampler import split_model
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, Rules, activation_sharding


def sequence_logprobs(model, tokens_bt: jax.Array, mask_bt: jax.Array, prompt_len: int, *,
                      temperature: float = 1.0) -> jax.Array:
  """Log-probs [B, T - prompt_len] of tokens `prompt_len:` given everything before them.

  A plain traceable function (call it inside a jitted loss to differentiate
  it). Rotary positions count real tokens only, as in `generate`, so a
  left-padded prompt followed by its completion scores exactly as sampled.

  Args:
    model: a `CausalLM`.
    tokens_bt: int [B, T]: a left-padded prompt of `prompt_len` columns, then
      the completion.
    mask_bt: [B, T] 1 at real tokens (prompt and completion up to its EOS).
    prompt_len: static number of prompt columns.
    temperature: divides the logits first; 1.0 gives the raw policy log-prob
      (what `SampleOutput.logprobs_bn` holds).

  Returns:
    float32 [B, T - prompt_len], 0 where the completion mask is 0.
  """
  t = tokens_bt.shape[1]
  if not 0 < prompt_len < t:
    raise ValueError(f"prompt_len must be in (0, {t}), got {prompt_len}")
  mask_bt = mask_bt.astype(jnp.int32)
  position_bt = jnp.maximum(jnp.cumsum(mask_bt, axis=1) - 1, 0)
  h_bte = model.model(tokens_bt, mask_bt, position_bt)
  # Only positions that predict a completion token go through the vocabulary
  # projection, which is the memory-heavy step.
  logits_bnv = model.lm_logits(h_bte[:, prompt_len - 1:t - 1]).astype(jnp.float32)
  logp_bnv = jax.nn.log_softmax(logits_bnv / jnp.float32(temperature), axis=-1)
  target_bn = tokens_bt[:, prompt_len:]
  logp_bn = jnp.take_along_axis(logp_bnv, target_bn[..., None], axis=-1)[..., 0]
  return jnp.where(mask_bt[:, prompt_len:] > 0, logp_bn, 0.0)


def score_completions(model_or_graphdef_state, prompt_ids_bt, prompt_mask_bt, completion_ids_bn,
                      completion_mask_bn, *, temperature: float = 1.0, mesh: Mesh | None = None,
                      rules: Rules = DEFAULT_RULES) -> jax.Array:
  """Jitted `sequence_logprobs` of completions after their (left-padded) prompts.

  Prompt and completion rows must correspond one to one: for `generate`
  output with G samples, pass `jnp.repeat(prompt_ids_bt, G, axis=0)` (and
  the same for the mask). Compiled once per shape, like `generate`.

  Returns:
    float32 [B, N] log-probs of the completion tokens, 0 where masked.
  """
  graphdef, state = split_model(model_or_graphdef_state)
  prompt_ids_bt = jnp.asarray(prompt_ids_bt, jnp.int32)
  tokens_bt = jnp.concatenate([prompt_ids_bt, jnp.asarray(completion_ids_bn, jnp.int32)], axis=1)
  mask_bt = jnp.concatenate([jnp.asarray(prompt_mask_bt, jnp.int32),
                             jnp.asarray(completion_mask_bn, jnp.int32)], axis=1)
  return _score_jit(graphdef, state, tokens_bt, mask_bt, prompt_len=prompt_ids_bt.shape[1],
                    temperature=float(temperature), mesh=mesh, rules=tuple(rules))


@functools.partial(jax.jit, static_argnums=(0,),
                   static_argnames=("prompt_len", "temperature", "mesh", "rules"))
def _score_jit(graphdef, state, tokens_bt, mask_bt, *, prompt_len, temperature, mesh, rules):
  with activation_sharding(mesh, rules):
    return sequence_logprobs(nnx.merge(graphdef, state), tokens_bt, mask_bt, prompt_len,
                             temperature=temperature)
