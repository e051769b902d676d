"""Reward and batch shaping switches of the GRPO loop (DAPO's tricks).

- Dynamic sampling: groups whose completions all got the same reward have zero
  advantage and give no gradient, so they are dropped and the batch is refilled
  from further rollouts (`nonzero_variance_groups`, `fill_groups`).
- Overlong reward shaping: a soft length penalty over the last `cache_len`
  tokens before the limit (`overlong_penalty`).
- Overlong filtering: completions cut off at the token limit without an EOS are
  masked out of the loss (`mask_truncated`).

The first and the last two are jittable `jax.numpy`; `fill_groups` runs on the
host between rollouts and uses numpy only.
"""

from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from omni_rrm_jax.rl.advantages import num_groups


def nonzero_variance_groups(rewards_b: jax.Array, group_size: int) -> jax.Array:
  """Which groups have at least two different rewards.

  Args:
    rewards_b: [B] rewards in consecutive groups of `group_size`.
    group_size: samples per prompt (static).

  Returns:
    [B // group_size] bool, True for groups to keep.
  """
  rewards_b = jnp.asarray(rewards_b)
  rewards_gk = rewards_b.reshape(num_groups(rewards_b.shape[0], group_size), group_size)
  # max != min rather than std > 0: exact for equal floats, no rounding residue.
  return jnp.max(rewards_gk, axis=-1) != jnp.min(rewards_gk, axis=-1)


class FilledGroups(NamedTuple):
  """What `fill_groups` gathered.

  Attributes:
    batch: the kept samples, each entry with leading dim num_groups * group_size.
    num_groups: groups kept; below the target only if the round cap or the end
      of the stream was hit first.
    rounds: how many batches were drawn from the stream.
    num_seen_groups: groups drawn in total, kept or dropped (for logging the
      keep rate).
  """
  batch: dict[str, np.ndarray]
  num_groups: int
  rounds: int
  num_seen_groups: int


def fill_groups(batches: Iterable[Mapping[str, np.ndarray]], group_size: int,
                target_groups: int, *, max_rounds: int,
                rewards_key: str = "rewards", min_spread: float = 0.0) -> FilledGroups:
  """DAPO dynamic sampling: draw group batches until enough groups survive.

  Each drawn batch is a mapping of per-sample arrays (leading dim a multiple of
  `group_size`, in consecutive groups) holding `rewards_key`. Groups whose
  rewards are all equal (with `min_spread`, whose max - min is at most it) are
  dropped; the others are concatenated in stream
  order until `target_groups` are kept, and the surplus of the last round is
  cut so the batch shape stays fixed for the jitted step.

  Args:
    batches: an iterable (usually a generator running rollouts) of batches.
    group_size: samples per prompt.
    target_groups: groups wanted in the training batch.
    max_rounds: cap on batches drawn (>= 1), so a task the policy always or
      never solves cannot stall the loop.
    rewards_key: key of the [n] rewards in each batch.
    min_spread: the largest spread (max - min of a group's rewards) still
      dropped as carrying no signal; 0 drops only equal rewards. With
      continuous rewards (a judge's score distance) a group whose samples all
      give the same verdict differs by a few hundredths, which the group's
      standard deviation would scale up to whole advantages.

  Returns:
    A `FilledGroups`; check `num_groups` against the target: when the cap or
    the stream end is hit first it holds fewer groups (possibly none, with the
    batch's keys kept and a leading dim of 0), and the caller decides whether to
    train on a short batch, pad or skip the step.

  Raises:
    ValueError: on bad arguments, a missing rewards key, or entries whose
      leading dim does not match the rewards.
  """
  if not isinstance(target_groups, int) or target_groups < 1:
    raise ValueError(f"target_groups must be a positive int, got {target_groups!r}")
  if not isinstance(max_rounds, int) or max_rounds < 1:
    raise ValueError(f"max_rounds must be a positive int, got {max_rounds!r}")
  if not min_spread >= 0:
    raise ValueError(f"min_spread must be >= 0, got {min_spread!r}")

  kept: list[dict[str, np.ndarray]] = []
  first: dict[str, np.ndarray] | None = None
  n_kept = n_seen = rounds = 0
  for batch in batches:
    rounds += 1
    if rewards_key not in batch:
      raise ValueError(f"batch has no {rewards_key!r} entry; keys: {sorted(batch)}")
    arrays = {k: np.asarray(v) for k, v in batch.items()}
    if first is None:
      first = arrays
    rewards_gk = arrays[rewards_key].reshape(
        num_groups(arrays[rewards_key].shape[0], group_size), group_size)
    for k, v in arrays.items():
      if v.shape[:1] != (rewards_gk.size,):
        raise ValueError(f"entry {k!r} has leading dim {v.shape[:1]}, expected "
                         f"{rewards_gk.size} (one per sample)")
    keep_g = rewards_gk.max(axis=-1) - rewards_gk.min(axis=-1) > min_spread
    n_seen += keep_g.size
    keep_g &= np.cumsum(keep_g) <= target_groups - n_kept
    if keep_g.any():
      keep_b = np.repeat(keep_g, group_size)
      kept.append({k: v[keep_b] for k, v in arrays.items()})
      n_kept += int(keep_g.sum())
    if n_kept >= target_groups or rounds >= max_rounds:
      break

  if kept:
    out = {k: np.concatenate([b[k] for b in kept]) for k in kept[0]}
  elif first is not None:
    out = {k: v[:0] for k, v in first.items()}
  else:
    out = {}
  return FilledGroups(out, n_kept, rounds, n_seen)


def overlong_penalty(lengths_b: jax.Array, max_len: int, cache_len: int) -> jax.Array:
  """DAPO's soft overlong penalty, added to the task reward.

  With soft = max_len - cache_len, a completion of L tokens gets
    0                    if L <= soft,
    (soft - L) / cache_len  if soft < L <= max_len (linear from 0 down to -1),
    -1                   if L > max_len.

  Args:
    lengths_b: [B] completion lengths in tokens.
    max_len: the length beyond which the full penalty applies (static).
    cache_len: width of the linear ramp, 0 <= cache_len <= max_len (static);
      0 gives a hard -1 beyond max_len.

  Returns:
    [B] float32 penalties in [-1, 0].
  """
  if not 0 <= cache_len <= max_len:
    raise ValueError(f"need 0 <= cache_len <= max_len, got cache_len={cache_len}, "
                     f"max_len={max_len}")
  lengths_b = jnp.asarray(lengths_b).astype(jnp.float32)
  soft = max_len - cache_len
  ramp_b = (soft - lengths_b) / max(cache_len, 1)
  return jnp.where(lengths_b <= soft, 0.0,
                   jnp.where(lengths_b <= max_len, ramp_b, -1.0)).astype(jnp.float32)


def mask_truncated(mask_bt: jax.Array, truncated_b: jax.Array) -> jax.Array:
  """Zero the loss mask of completions cut off at the token limit without EOS.

  Args:
    mask_bt: [B, T] completion mask (bool, int or float).
    truncated_b: [B] bool, True where the completion hit max tokens without an
      EOS token.

  Returns:
    [B, T] mask of the same dtype with the truncated rows all zero.
  """
  mask_bt = jnp.asarray(mask_bt)
  keep_b1 = ~jnp.asarray(truncated_b, bool)[:, None]
  return jnp.where(keep_b1, mask_bt, jnp.zeros_like(mask_bt))
