"""The GRPO family of clipped policy-gradient losses.

One function, `policy_loss`, covers GRPO, BNPO, Dr. GRPO, DAPO and GSPO: they
share the clipped surrogate and differ in how token losses are averaged (and,
for GSPO, in the importance ratio). Configs pick one by name through
`POLICY_LOSSES`:

  loss, metrics = POLICY_LOSSES.get("dapo")(logp_bt, old_logp_bt, adv_b, mask_bt,
                                            epsilon_high=0.28)

All inputs are per completion token: `logp_bt` are the log-probabilities of the
sampled tokens under the policy being trained, `old_logp_bt` under the policy
that sampled them, `ref_logp_bt` under the frozen reference, `mask_bt` marks
completion tokens (prompt and padding are 0).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from omni_rrm_jax.core.registry import Registry

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "gspo")
KL_ESTIMATORS = ("k1", "k2", "k3")

POLICY_LOSSES = Registry("policy loss")


def kl_estimate(logp_bt: jax.Array, ref_logp_bt: jax.Array,
                estimator: str = "k3") -> jax.Array:
  """Per-token estimate of KL(policy || reference) from sampled-token log-probs.

  With d = ref_logp - logp (Schulman, "Approximating KL divergence"):
    k1 = -d                  unbiased, high variance, can be negative;
    k2 = d**2 / 2            biased, low variance;
    k3 = exp(d) - d - 1      unbiased, low variance, never negative (GRPO).

  Args:
    logp_bt: [B, T] policy log-probabilities.
    ref_logp_bt: [B, T] reference log-probabilities.
    estimator: "k1", "k2" or "k3" (static).

  Returns:
    [B, T] per-token estimates.
  """
  d_bt = ref_logp_bt - logp_bt
  if estimator == "k1":
    return -d_bt
  if estimator == "k2":
    return 0.5 * jnp.square(d_bt)
  if estimator == "k3":
    return jnp.exp(d_bt) - d_bt - 1.0
  raise ValueError(f"unknown kl_estimator {estimator!r}; known: {', '.join(KL_ESTIMATORS)}")


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
  # Empty rows and empty batches have a zero numerator too, so flooring the
  # denominator at 1 turns 0/0 into 0 without touching any real average.
  return num / jnp.maximum(den, 1.0)


def _validate(loss_type, kl_estimator, max_completion_length, num_global_tokens,
              delta, beta, ref_logp_bt) -> None:
  if loss_type not in LOSS_TYPES:
    raise ValueError(f"unknown loss_type {loss_type!r}; known: {', '.join(LOSS_TYPES)}")
  if kl_estimator not in KL_ESTIMATORS:
    raise ValueError(
        f"unknown kl_estimator {kl_estimator!r}; known: {', '.join(KL_ESTIMATORS)}")
  if loss_type == "dr_grpo":
    if max_completion_length is None:
      raise ValueError(
          "loss_type='dr_grpo' needs max_completion_length (the constant the token "
          "sum is divided by, batch size * max_completion_length)")
    if not isinstance(max_completion_length, int) or max_completion_length < 1:
      raise ValueError(
          f"max_completion_length must be a positive int, got {max_completion_length!r}")
  if num_global_tokens is not None and loss_type != "dapo":
    raise ValueError(
        f"num_global_tokens is only used by loss_type='dapo', not {loss_type!r}")
  if delta is not None and isinstance(delta, (int, float)) and delta <= 1.0:
    raise ValueError(f"dual-clip delta must be > 1, got {delta!r}")
  if ref_logp_bt is None and not (isinstance(beta, (int, float)) and beta == 0):
    raise ValueError(f"beta={beta!r} needs ref_logp_bt for the KL penalty")


def loss_denominator(mask_bt: jax.Array, loss_type: str,
                     max_completion_length: int | None = None) -> jax.Array:
  """What `policy_loss` divides its token-loss sum by, for the batch `mask_bt`.

  "grpo" / "gspo": the rows with at least one valid token (each row's token
  mean is summed first); "bnpo" / "dapo": the valid tokens; "dr_grpo": rows
  times `max_completion_length`. A caller that splits a batch into parts
  (gradient accumulation) passes the whole batch's value as `denominator` to
  every part, so the parts' losses and gradients add up exactly to the whole
  batch's.

  Args:
    mask_bt: [B, T] 1 on completion tokens that count.
    loss_type: one of `LOSS_TYPES` (static).
    max_completion_length: "dr_grpo"'s constant.

  Returns:
    A float32 scalar (not floored; `policy_loss` floors it at 1).
  """
  mask_bt = jnp.asarray(mask_bt).astype(jnp.float32)
  if loss_type in ("grpo", "gspo"):
    return jnp.sum((jnp.sum(mask_bt, axis=-1) > 0).astype(jnp.float32))
  if loss_type in ("bnpo", "dapo"):
    return jnp.sum(mask_bt)
  if loss_type == "dr_grpo":
    if max_completion_length is None:
      raise ValueError("loss_type='dr_grpo' needs max_completion_length")
    return jnp.float32(mask_bt.shape[0] * max_completion_length)
  raise ValueError(f"unknown loss_type {loss_type!r}; known: {', '.join(LOSS_TYPES)}")


def policy_loss(logp_bt: jax.Array,
                old_logp_bt: jax.Array,
                adv_b: jax.Array,
                mask_bt: jax.Array,
                *,
                ref_logp_bt: jax.Array | None = None,
                loss_type: str = "grpo",
                epsilon_low: float = 0.2,
                epsilon_high: float = 0.2,
                delta: float | None = None,
                beta: float = 0.0,
                kl_estimator: str = "k3",
                max_completion_length: int | None = None,
                num_global_tokens: jax.Array | int | None = None,
                denominator: jax.Array | float | None = None,
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Clipped surrogate policy loss of the GRPO family.

  Per valid token, with ratio r = exp(logp - old_logp) and advantage A:

    objective = min(r A, clip(r, 1 - epsilon_low, 1 + epsilon_high) A)
    objective = max(objective, delta A)   if delta is set and A < 0 (dual clip)
    objective = objective - beta KL       if ref_logp_bt is given
    token loss = -objective

  Token losses are then averaged according to `loss_type`:

    "grpo":    mean over each sequence's valid tokens, then mean over the
               sequences that have at least one valid token. A fully masked row
               (e.g. a truncated completion, or a row padding the batch to a
               multiple of the device count) is left out of the denominator, so
               it neither contributes nor dilutes the others: the loss equals
               the loss of the batch with that row removed. (TRL counts such
               rows; the two agree whenever no row is empty.)
    "bnpo":    mean over all valid tokens of the batch.
    "dr_grpo": sum over all valid tokens / (B * max_completion_length), B the
               number of rows including empty ones: a constant, so no length
               bias (Dr. GRPO).
    "dapo":    token mean over the whole batch (DAPO). Under `jax.jit` with a
               sharded batch the sum is already global; a caller that splits
               the batch itself (shard_map, gradient accumulation) passes the
               valid-token count of the global batch as `num_global_tokens`
               so every shard divides by the same number.
    "gspo":    GSPO's sequence-level ratio s = exp(mean over the sequence's
               valid tokens of (logp - old_logp)), clipped per sequence, then
               aggregated as "grpo". It is written as the GSPO-token form
               s_t = stop_gradient(s) * exp(logp_t - stop_gradient(logp_t)):
               its value is s on every token and its gradient s * grad logp_t,
               which after the per-sequence token mean is exactly the gradient
               of the paper's sequence-level objective (the two forms coincide
               for sequence-level advantages).

  Padding positions may hold any value (even inf/NaN): they are replaced
  before any arithmetic, so the loss and its gradient stay finite and the
  gradient on masked tokens is exactly zero. The ratio itself is not clamped;
  set `delta` to bound the loss of negative-advantage tokens whose ratio has
  drifted far.

  Args:
    logp_bt: [B, T] log-probabilities of the sampled tokens under the policy
      being optimised (the only input gradients are meant to flow into).
    old_logp_bt: [B, T] the same under the sampling policy.
    adv_b: [B] per-sequence advantages (or [B, T] per-token advantages).
    mask_bt: [B, T] 1 on completion tokens that count, 0 elsewhere (bool or
      float).
    ref_logp_bt: optional [B, T] log-probabilities under the reference policy;
      needed when `beta != 0`, and gives the `kl_mean` metric even at beta 0.
    loss_type: one of `LOSS_TYPES` (static).
    epsilon_low: lower clip range, ratio floor 1 - epsilon_low.
    epsilon_high: upper clip range, ratio ceiling 1 + epsilon_high (DAPO's
      clip-higher uses e.g. 0.28).
    delta: dual-clip constant (> 1) bounding the objective of tokens with
      negative advantage at delta * A; None disables it.
    beta: KL penalty coefficient.
    kl_estimator: "k1", "k2" or "k3" (static), see `kl_estimate`.
    max_completion_length: required by "dr_grpo" (static int).
    num_global_tokens: optional "dapo" normaliser, the number of valid tokens
      of the global batch; defaults to `mask_bt.sum()`.
    denominator: optional, for any loss type: `loss_denominator` of the whole
      batch when this call sees only part of it (a micro-batch of whole rows).
      The loss is then that part's share: the parts' losses (and gradients)
      sum to the whole batch's. Defaults to this batch's own.

  Returns:
    (loss, metrics): the scalar loss and a dict of scalars over valid tokens:
    `clip_frac_low` (ratio < 1 - epsilon_low with A < 0, the clip is active),
    `clip_frac_high` (ratio > 1 + epsilon_high with A > 0), `ratio_mean`
    (for "gspo" the sequence ratio seen by each token), `kl_mean` (0 without
    a reference) and `loss`.

  Raises:
    ValueError: on an unknown loss type or KL estimator, "dr_grpo" without
      `max_completion_length`, `num_global_tokens` with another loss type, a
      dual-clip delta <= 1, beta != 0 without a reference, both
      `num_global_tokens` and `denominator`, or bad shapes.
  """
  _validate(loss_type, kl_estimator, max_completion_length, num_global_tokens,
            delta, beta, ref_logp_bt)
  if num_global_tokens is not None and denominator is not None:
    raise ValueError("pass num_global_tokens or denominator, not both")
  logp_bt = jnp.asarray(logp_bt)
  if logp_bt.ndim != 2:
    raise ValueError(f"logp_bt must be [B, T], got shape {logp_bt.shape}")
  for name, x in (("old_logp_bt", old_logp_bt), ("mask_bt", mask_bt),
                  ("ref_logp_bt", ref_logp_bt)):
    if x is not None and jnp.shape(x) != logp_bt.shape:
      raise ValueError(f"{name} has shape {jnp.shape(x)}, expected {logp_bt.shape}")
  if jnp.ndim(adv_b) not in (1, 2) or jnp.shape(adv_b)[0] != logp_bt.shape[0]:
    raise ValueError(
        f"adv_b must be [B] or [B, T] with B={logp_bt.shape[0]}, got {jnp.shape(adv_b)}")

  # Log-probs often arrive in bfloat16; ratios and sums need float32.
  dtype = jnp.promote_types(logp_bt.dtype, jnp.float32)
  mask_bt = jnp.asarray(mask_bt).astype(dtype)
  valid_bt = mask_bt > 0
  zeros_bt = jnp.zeros(logp_bt.shape, dtype)

  def clean(x_bt):
    # A `where` (not a multiply) so that inf/NaN padding cannot leak into the
    # values or, through the unselected branch, into the gradient.
    return jnp.where(valid_bt, jnp.asarray(x_bt).astype(dtype), zeros_bt)

  logp_bt = clean(logp_bt)
  old_logp_bt = clean(old_logp_bt)
  adv_b = jnp.asarray(adv_b).astype(dtype)
  adv_bt = jnp.broadcast_to(adv_b[:, None] if adv_b.ndim == 1 else adv_b, logp_bt.shape)
  adv_bt = jnp.where(valid_bt, adv_bt, zeros_bt)

  tokens_b = jnp.sum(mask_bt, axis=-1)
  if loss_type == "gspo":
    seq_log_ratio_b = _safe_div(jnp.sum(mask_bt * (logp_bt - old_logp_bt), axis=-1), tokens_b)
    log_ratio_bt = (jax.lax.stop_gradient(seq_log_ratio_b)[:, None]
                    + logp_bt - jax.lax.stop_gradient(logp_bt))
  else:
    log_ratio_bt = logp_bt - old_logp_bt
  ratio_bt = jnp.exp(log_ratio_bt)

  clipped_ratio_bt = jnp.clip(ratio_bt, 1.0 - epsilon_low, 1.0 + epsilon_high)
  objective_bt = jnp.minimum(ratio_bt * adv_bt, clipped_ratio_bt * adv_bt)
  if delta is not None:
    objective_bt = jnp.where(adv_bt < 0, jnp.maximum(objective_bt, delta * adv_bt),
                             objective_bt)
  if ref_logp_bt is not None:
    kl_bt = kl_estimate(logp_bt, clean(ref_logp_bt), kl_estimator)
    objective_bt = objective_bt - beta * kl_bt
  else:
    kl_bt = zeros_bt
  loss_bt = -objective_bt * mask_bt

  total_tokens = jnp.sum(mask_bt)
  if loss_type in ("grpo", "gspo"):
    numerator = jnp.sum(_safe_div(jnp.sum(loss_bt, axis=-1), tokens_b))
  else:
    numerator = jnp.sum(loss_bt)
  if denominator is None and num_global_tokens is not None:
    denominator = num_global_tokens
  if denominator is None:
    denominator = loss_denominator(mask_bt, loss_type, max_completion_length)
  loss = _safe_div(numerator, jnp.asarray(denominator, dtype))

  def token_mean(x_bt):
    return _safe_div(jnp.sum(mask_bt * x_bt), total_tokens)

  ratio_sg_bt = jax.lax.stop_gradient(ratio_bt)
  metrics = {
      "clip_frac_low": token_mean(
          ((ratio_sg_bt < 1.0 - epsilon_low) & (adv_bt < 0)).astype(dtype)),
      "clip_frac_high": token_mean(
          ((ratio_sg_bt > 1.0 + epsilon_high) & (adv_bt > 0)).astype(dtype)),
      "ratio_mean": token_mean(ratio_sg_bt),
      "kl_mean": token_mean(jax.lax.stop_gradient(kl_bt)),
      "loss": jax.lax.stop_gradient(loss),
  }
  return loss, metrics


for _name in LOSS_TYPES:
  POLICY_LOSSES.add(_name, functools.partial(policy_loss, loss_type=_name))
del _name
