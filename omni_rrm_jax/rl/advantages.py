"""Group-relative advantage estimators (GRPO, Dr. GRPO).

Rewards arrive as one flat vector laid out in consecutive groups: the
`group_size` completions sampled for prompt 0, then those for prompt 1, and so
on. Every estimator centres each reward on its group mean; they differ only in
the scale they divide by.

Configs pick an estimator by name through `ADVANTAGE_ESTIMATORS`:

  adv_b = ADVANTAGE_ESTIMATORS.get("dr_grpo")(rewards_b, group_size=8)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from omni_rrm_jax.core.registry import Registry

SCALES = ("group", "batch", "none")

ADVANTAGE_ESTIMATORS = Registry("advantage estimator")


def num_groups(batch_size: int, group_size: int) -> int:
  """Number of prompt groups in a batch, with a clear error on a bad layout.

  Args:
    batch_size: number of completions in the batch.
    group_size: completions sampled per prompt.

  Returns:
    `batch_size // group_size`.

  Raises:
    ValueError: if `group_size < 1` or the batch is not made of whole groups.
  """
  if not isinstance(group_size, int) or group_size < 1:
    raise ValueError(f"group_size must be a positive int, got {group_size!r}")
  if batch_size % group_size:
    raise ValueError(
        f"batch size {batch_size} is not a multiple of group_size {group_size}; "
        "rewards must be laid out as consecutive groups of group_size samples")
  return batch_size // group_size


def _sample_std(centred: jax.Array, axis, count: int) -> jax.Array:
  # ddof=1 as TRL and verl compute it; a single sample has no spread, so the
  # denominator is floored at 1 rather than producing 0/0.
  return jnp.sqrt(jnp.sum(jnp.square(centred), axis=axis, keepdims=True)
                  / max(count - 1, 1))


def group_advantages(rewards_b: jax.Array, group_size: int, *,
                     scale: str = "group", eps: float = 1e-6) -> jax.Array:
  """Group-relative advantages: (r - group mean) / (std + eps).

  Args:
    rewards_b: [B] rewards, consecutive groups of `group_size` samples of the
      same prompt (B = num_groups * group_size).
    group_size: samples per prompt; static under `jax.jit`.
    scale: what the centred rewards are divided by (static):
      "group": the sample std (ddof=1) of each group (GRPO);
      "batch": the sample std (ddof=1) of the whole batch (the more robust
        variant of "Tricks or Traps"; TRL `scale_rewards="batch"`);
      "none": nothing, mean-centring only (Dr. GRPO).
    eps: added to the std so a near-constant group does not blow up.

  Returns:
    [B] advantages in the dtype of `rewards_b` (at least float32). A group whose
    rewards are all equal gets exactly 0, whatever the scale: the float group
    mean of equal values need not equal them bit for bit, and that rounding
    residue divided by a tiny std would otherwise be a spurious signal.

  Raises:
    ValueError: on an unknown `scale` or a batch that is not whole groups.
  """
  if scale not in SCALES:
    raise ValueError(f"unknown advantage scale {scale!r}; known: {', '.join(SCALES)}")
  rewards_b = jnp.asarray(rewards_b)
  if rewards_b.ndim != 1:
    raise ValueError(f"rewards_b must be 1-D [B], got shape {rewards_b.shape}")
  batch_size = rewards_b.shape[0]
  n_groups = num_groups(batch_size, group_size)
  dtype = jnp.promote_types(rewards_b.dtype, jnp.float32)
  rewards_gk = rewards_b.astype(dtype).reshape(n_groups, group_size)

  centred_gk = rewards_gk - jnp.mean(rewards_gk, axis=-1, keepdims=True)
  if scale == "group":
    adv_gk = centred_gk / (_sample_std(centred_gk, -1, group_size) + eps)
  elif scale == "batch":
    batch_centred_gk = rewards_gk - jnp.mean(rewards_gk)
    adv_gk = centred_gk / (_sample_std(batch_centred_gk, None, batch_size) + eps)
  else:
    adv_gk = centred_gk

  constant_g1 = (jnp.max(rewards_gk, axis=-1, keepdims=True)
                 == jnp.min(rewards_gk, axis=-1, keepdims=True))
  adv_gk = jnp.where(constant_g1, jnp.zeros_like(adv_gk), adv_gk)
  return adv_gk.reshape(batch_size)


ADVANTAGE_ESTIMATORS.add("grpo", functools.partial(group_advantages, scale="group"))
ADVANTAGE_ESTIMATORS.add("grpo_batch_std", functools.partial(group_advantages, scale="batch"))
ADVANTAGE_ESTIMATORS.add("dr_grpo", functools.partial(group_advantages, scale="none"))
