"""One optimizer update that is skipped when it must not be applied, for every trainer.

  new_state, metrics = guarded_update(state, grads, loss, tx, schedule=schedule,
                                      has_work=num_tokens > 0)

The RM/SFT step (`train/step.py`) and the GRPO step (`rl/grpo_step.py`) both end
here. An update is applied only when the loss and the gradient norm are finite
and the batch had something to learn from (`has_work`; GRPO's minibatch without
a single loss token has not). A skipped update leaves the parameters and the
optimizer state as they were, so the optimizer's own count, the step its
learning-rate schedule reads, advances only with applied updates. The logged
`learning_rate` is the schedule at that count: the rate this update used, or
would have used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from omni_rrm_jax.train.state import TrainState


def schedule_count(opt_state) -> jax.Array:
  """The optimizer's count of applied updates, as its learning-rate schedule reads it.

  Raises:
    ValueError: the optimizer has no schedule state (`optax.scale_by_schedule`,
      which `optax.adamw(schedule)` and `train.optimizer.make_optimizer` hold).
  """
  is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)  # noqa: E731
  found = [s.count for s in jax.tree.leaves(opt_state, is_leaf=is_schedule) if is_schedule(s)]
  if not found:
    raise ValueError("logging the learning rate needs an optimizer with a learning-rate "
                     "schedule (optax.scale_by_schedule), e.g. train.optimizer.make_optimizer")
  return found[0]


def guarded_update(state: TrainState, grads, loss: jax.Array,
                   tx: optax.GradientTransformation, *, schedule: optax.Schedule | None = None,
                   has_work: jax.Array | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
  """Applies `grads` unless the loss or gradient norm is non-finite or there is no work.

  Args:
    state: the train state before the update.
    grads: gradients shaped (and typed) like `state.params`.
    loss: the batch's scalar loss.
    tx: the optimizer `state.opt_state` belongs to.
    schedule: its learning-rate schedule, to log `learning_rate`.
    has_work: a boolean scalar, False when the batch holds nothing to learn
      from (skipped without counting as non-finite); None means True.

  Returns:
    `(new_state, metrics)`: the state one step on (`step` + 1 whether or not
    the update was applied; `nonfinite_streak` reset by a finite update and
    bumped by a non-finite one, `nonfinite_total` counting the latter) and
    `grad_norm`, `skipped` (1 when the update was not applied),
    `nonfinite_streak`, `nonfinite_total`, `step` (after the update) and,
    with `schedule`, `learning_rate`.
  """
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  ok = finite if has_work is None else finite & has_work

  def apply(params, opt_state, grads):
    updates, new_opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_opt_state

  def keep(params, opt_state, grads):
    del grads
    return params, opt_state

  # A branch rather than a select per leaf: XLA then updates each donated
  # parameter and moment in place; with `where(ok, new, old)` per leaf it
  # copied every optimizer moment first (a full extra pass over them).
  new_params, new_opt_state = jax.lax.cond(ok, apply, keep, state.params, state.opt_state, grads)
  nonfinite = (~finite).astype(jnp.int32)
  new_state = state.replace(
      step=state.step + 1,
      params=new_params,
      opt_state=new_opt_state,
      nonfinite_streak=jnp.where(finite, 0, state.nonfinite_streak + 1),
      nonfinite_total=state.nonfinite_total + nonfinite)
  metrics = dict(grad_norm=grad_norm, skipped=(~ok).astype(jnp.int32),
                 nonfinite_streak=new_state.nonfinite_streak,
                 nonfinite_total=new_state.nonfinite_total, step=new_state.step)
  if schedule is not None:
    metrics["learning_rate"] = jnp.asarray(schedule(schedule_count(state.opt_state)), jnp.float32)
  return new_state, metrics
