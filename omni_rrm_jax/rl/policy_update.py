"""A GRPO step's policy updates: `num_iterations` passes of `num_minibatches` minibatches.

  state, metrics = update_policy(state, grpo_step, batch, num_iterations=2,
                                 num_minibatches=2, seed=config.seed, step=step,
                                 mesh=mesh, rules=rules)

Each pass visits the rows in a new order, `default_rng([seed, step, pass])`, so a
resumed run and every process draw the same minibatches; each process feeds its
share of every global minibatch (`rl/multihost_rows.py:process_share`). The
updates' metrics are fetched once, after the last one is dispatched.
"""

from __future__ import annotations

import jax
import numpy as np

from omni_rrm_jax.rl.multihost_rows import process_share
from omni_rrm_jax.rl.update_batch import UpdateBatch
from omni_rrm_jax.sharding.batch import to_global
from omni_rrm_jax.train.nonfinite_check import check_nonfinite
from omni_rrm_jax.train.step import Step

# Train-step metrics averaged over a step's updates; the rest are taken from the last one.
MEAN_OVER_UPDATES = ("loss", "kl_mean", "clip_frac_low", "clip_frac_high", "ratio_mean",
                     "grad_norm", "num_tokens")


def update_policy(state, grpo_step: Step, batch: UpdateBatch, *, num_iterations: int,
                  num_minibatches: int, seed: int, step: int, mesh, rules):
  """Runs the step's updates on `batch`; returns the new state and their metrics.

  Args:
    state: the train state (donated to each update).
    grpo_step: the jitted update (`rl.grpo_step.make_grpo_step`).
    batch: the step's `UpdateBatch`.
    num_iterations: passes over the batch.
    num_minibatches: updates per pass; divides the row count.
    seed, step: pick each pass's row order.
    mesh, rules: where the minibatches go.

  Returns:
    `(state, metrics)`: `MEAN_OVER_UPDATES` averaged over the updates, the
    others from the last one, and `skipped`, the updates not applied.

  Raises:
    FloatingPointError: too many consecutive updates were non-finite.
  """
  num_rows = len(batch.rows["adv"])
  updates = []
  for epoch in range(num_iterations):
    order = np.random.default_rng([seed, step, epoch]).permutation(num_rows)
    for rows_m in np.split(order, num_minibatches):
      minibatch = batch.rows_of(process_share(rows_m))
      state, m = grpo_step(state, to_global(minibatch, mesh, rules))
      updates.append(m)
  updates = jax.device_get(updates)
  check_nonfinite(updates[-1], grpo_step.max_nonfinite_streak)
  metrics = {k: float(np.mean([u[k] for u in updates])) for k in MEAN_OVER_UPDATES}
  metrics.update({k: float(updates[-1][k]) for k in updates[-1]
                  if k not in MEAN_OVER_UPDATES and k != "step"})
  metrics["skipped"] = float(sum(u["skipped"] for u in updates))
  return state, metrics
