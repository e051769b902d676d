"""The jitted GRPO policy update: one optimizer step on one minibatch of rollouts.

  step = make_grpo_step(graphdef, tx, loss_type="grpo", beta=0.0, on_policy=True, mesh=mesh)
  state, metrics = step(state, batch)       # state (a train.state.TrainState) is donated

A batch is a dict of [B, ...] arrays, B rows sharded over the `batch` axis, with
the keys of `core.batch_contract.GRPO_BATCH`:

  prompt_ids, prompt_mask        [B, P]  left-padded prompts (P is static)
  completion_ids, completion_mask [B, N]  sampled tokens; 1 up to and including EOS
  loss_mask                       [B, N]  completion tokens that count (truncated or
                                          padding rows all zero)
  old_logp                        [B, N]  log-probs under the sampling policy
  adv                             [B]     per-completion advantages
  ref_logp (only when beta > 0)   [B, N]  log-probs under the frozen reference

and, for a multimodal policy, each row's prompt media (`models.media_inputs`
keys, sequence keys over the P prompt columns, e.g. from
`rl.prompt_media.PromptMedia.collate`), which the recompute encodes per row.

The policy's log-probs are recomputed differentiably (`sequence_logprobs`, raw
policy at temperature 1, as the sampler stores them), the vocabulary head
`logits_chunk` completion positions at a time. With `grad_accum_steps` > 1 the
minibatch runs as that many strided micro-batches under `jax.lax.scan` (one
optimizer update, gradients summed in a carry sharded like the parameters);
each micro-batch divides by the whole minibatch's loss denominator
(`rl.losses.loss_denominator`: its non-empty rows, valid tokens or rows x
max length), so loss and gradient equal the whole minibatch's, and token-mean
metrics are weighted by each micro-batch's tokens. With `on_policy` (one
pass, one minibatch: the params are exactly the sampling params) the old
log-probs are the detached current ones, so the ratio is exactly 1 and only
its gradient matters; otherwise they come from the batch. The update goes
through `train.guarded_update`, as the RM/SFT step's does: a non-finite loss or
gradient norm skips it and counts the skip; a minibatch without a single loss
token (every group dropped) also leaves params and optimizer state untouched,
without counting as non-finite, and the logged learning rate stays that of
the optimizer's count of applied updates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from omni_rrm_jax.core.batch_contract import GRPO_BATCH, MEDIA_KEYS
from omni_rrm_jax.models.lora import lora_dropout
from omni_rrm_jax.rl.losses import POLICY_LOSSES, loss_denominator
from omni_rrm_jax.sampling.scoring import sequence_logprobs
from omni_rrm_jax.sharding.params import state_shardings as param_shardings
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, Rules, activation_sharding
from omni_rrm_jax.train.guarded_update import guarded_update
from omni_rrm_jax.train.state import TrainState
from omni_rrm_jax.train.step import Step, split_micro

# Policy-loss metrics that are means over valid tokens (re-weighted across micro-batches).
_TOKEN_MEANS = ("clip_frac_low", "clip_frac_high", "ratio_mean", "kl_mean")


def policy_logprobs(model, batch: dict[str, jax.Array], logits_chunk: int = 0) -> jax.Array:
  """[B, N] log-probs of the completion tokens after their prompts (and their media),
  the vocabulary head applied `logits_chunk` positions at a time (0: at once)."""
  tokens_bt = jnp.concatenate([batch["prompt_ids"], batch["completion_ids"]], axis=1)
  mask_bt = jnp.concatenate([batch["prompt_mask"], batch["completion_mask"]], axis=1)
  media = {k: batch[k] for k in MEDIA_KEYS if k in batch}
  return sequence_logprobs(model, tokens_bt, mask_bt, batch["prompt_ids"].shape[1],
                           media=media or None, logits_chunk=logits_chunk)


def make_grpo_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, *,
                   loss_type: str = "grpo", epsilon_low: float = 0.2,
                   epsilon_high: float = 0.2, delta: float | None = None, beta: float = 0.0,
                   kl_estimator: str = "k3", max_completion_length: int | None = None,
                   on_policy: bool = True, max_nonfinite_streak: int = 5,
                   mesh: Mesh | None = None, rules: Rules = DEFAULT_RULES,
                   schedule: optax.Schedule | None = None, grad_accum_steps: int = 1,
                   logits_chunk: int = 0) -> Step:
  """Builds the jitted `grpo_step(state, batch) -> (state, metrics)`.

  Args:
    graphdef: the policy's graph definition (`init_train_state`).
    tx: the optimizer the state was created with.
    loss_type: a name in `rl.losses.POLICY_LOSSES` ("grpo", "bnpo", "dr_grpo",
      "dapo", "gspo").
    epsilon_low: lower clip range of the ratio.
    epsilon_high: upper clip range (DAPO's clip-higher uses e.g. 0.28).
    delta: dual-clip constant (> 1), or None.
    beta: KL coefficient; > 0 needs `ref_logp` in every batch.
    kl_estimator: "k1", "k2" or "k3".
    max_completion_length: "dr_grpo"'s constant (the sampler's max_new_tokens).
    on_policy: use the detached current log-probs as the old ones (only valid
      when this update is the first and only one on its rollouts).
    max_nonfinite_streak: recorded on the step for `train.step.check_nonfinite`.
    mesh: device mesh; None runs on the default device.
    rules: logical -> mesh axis rules.
    schedule: the learning-rate schedule, to log `learning_rate`.
    grad_accum_steps: micro-batches per update; must divide the minibatch rows
      (strided, as `train.step.split_micro`).
    logits_chunk: completion positions per vocabulary-head chunk (0: all at
      once; `models.token_logprobs`).

  Returns:
    A `train.step.Step`, jitted on first call with the state donated. Metrics:
    `policy_loss`'s (`loss`, `clip_frac_low`, `clip_frac_high`, `ratio_mean`,
    `kl_mean`) plus `grad_norm`, `num_tokens`, `skipped`, `nonfinite_streak`,
    `nonfinite_total`, `step` and `learning_rate`.
  """
  if grad_accum_steps < 1:
    raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
  loss_fn_by_type = POLICY_LOSSES.get(loss_type)
  loss_kw = dict(epsilon_low=epsilon_low, epsilon_high=epsilon_high, delta=delta, beta=beta,
                 kl_estimator=kl_estimator)
  if loss_type == "dr_grpo":
    loss_kw["max_completion_length"] = max_completion_length

  def loss_fn(params, frozen, micro, denominator, rng):
    with lora_dropout(rng):
      logp_bn = policy_logprobs(nnx.merge(graphdef, params, frozen, copy=True), micro, logits_chunk)
    old_bn = jax.lax.stop_gradient(logp_bn) if on_policy else micro["old_logp"]
    ref_bn = micro.get("ref_logp") if beta > 0 else None
    return loss_fn_by_type(logp_bn, old_bn, micro["adv"], micro["loss_mask"],
                           ref_logp_bt=ref_bn, denominator=denominator, **loss_kw)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def grpo_step(state: TrainState, batch: dict[str, jax.Array]):
    GRPO_BATCH.check(batch)
    if beta > 0 and "ref_logp" not in batch:
      raise KeyError("grpo batch: missing ['ref_logp'], which beta > 0 needs")
    with activation_sharding(mesh, rules):
      rng = jax.random.fold_in(state.rng, state.step)
      # The whole minibatch's denominator, so the micro-batches' losses add up to its loss.
      denominator = loss_denominator(batch["loss_mask"], loss_type, max_completion_length)
      batch_ab = split_micro(batch, grad_accum_steps)
      rng_a = (rng[None] if grad_accum_steps == 1
               else jax.random.split(rng, grad_accum_steps))

      def accumulate(grads_acc, micro_and_rng):
        micro, rng_k = micro_and_rng
        (loss_k, metrics_k), grads_k = grad_fn(state.params, state.frozen, micro, denominator,
                                               rng_k)
        grads_acc = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grads_acc, grads_k)
        tokens_k = jnp.sum(micro["loss_mask"].astype(jnp.float32))
        return grads_acc, (loss_k, metrics_k, tokens_k)

      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
      if mesh is not None:
        # Keep the scan carry sharded like the parameters, not replicated.
        zeros = jax.lax.with_sharding_constraint(zeros, param_shardings(zeros, mesh, rules))
      grads, (loss_a, metrics_a, tokens_a) = jax.lax.scan(accumulate, zeros, (batch_ab, rng_a))
      grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
    loss = jnp.sum(loss_a)
    num_tokens = jnp.sum(tokens_a)
    if grad_accum_steps == 1:
      metrics = {k: metrics_a[k][0] for k in _TOKEN_MEANS}
    else:  # each micro-batch's token means, weighted by its tokens
      metrics = {k: jnp.sum(metrics_a[k] * tokens_a) / jnp.maximum(num_tokens, 1.0)
                 for k in _TOKEN_MEANS}
    new_state, update_metrics = guarded_update(state, grads, loss, tx, schedule=schedule,
                                               has_work=num_tokens > 0)
    return new_state, dict(metrics, loss=loss, num_tokens=num_tokens, **update_metrics)

  return Step(grpo_step, mesh=mesh, rules=rules, state_shardings=None, donate=True,
              returns_state=True, max_nonfinite_streak=max_nonfinite_streak)
