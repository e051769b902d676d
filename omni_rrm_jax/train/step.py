"""Pure, jitted train and eval steps for reward models and SFT, one `TaskKind` each.

  step = make_train_step(graphdef, tx, task_kind("rm"), schedule=schedule, mesh=mesh)
  state, metrics = step(state, batch)       # state is donated
  NonfiniteCheck(step.max_nonfinite_streak).push(metrics)   # train/nonfinite_check.py

Batches are dicts of [B, ...] arrays, sharded over the `batch` logical axis,
with the keys of the kind's `batch` contract (`core/batch_contract.py`):

  rm:  chosen_input_ids, chosen_attention_mask, rejected_input_ids,
       rejected_attention_mask [B, T] (chosen and rejected padded to one T),
       optional margin [B] and valid [B].
  sft: input_ids, attention_mask, loss_mask [B, T] (loss_mask[:, t] marks
       token t as a target; see `losses.causal_lm_token_losses`), optional
       valid [B].

`valid` weighs rows; 0 marks padding rows added to fill a fixed batch shape.

Packed rows (`data.pack`; `data/packing.py`) add `segment_ids`
(sft) or `chosen_segment_ids` and `rejected_segment_ids` (rm) [B, T], 0 at
padding and 1..k for the examples of a row, and carry `valid` and `margin`
per segment, [B, S]; the losses and normalizers count segments (pairs) and
their targets exactly as the unpacked batch counts rows.

Either kind may carry media for a multimodal model (`data.media_batching`
builds them; every key is row-aligned), in whole groups (see
`models.media_inputs`):

  position_ids [B, 3, T]         M-RoPE ids (rows first, unlike the model's)
  media_index [B, T]             the row's media token at each placeholder
                                 ([vision | audio] order), -1 elsewhere
  vision_patches [B, N, C*T*P*P] each row's image and video patches, padded
  vision_perm, vision_frame, vision_window [B, N], vision_position [B, N, 2],
  vision_unperm [B, N / merge²]  each row's vision-encoder layout
  input_features [B, mel, F], feature_attention_mask [B, F]
                                 each row's audio clip (Qwen2.5-Omni), padded
  audio_frame_index, audio_frame_valid [B, C, W], audio_token_valid [B, C, N],
  audio_pool_index [B, P, 2]     each row's audio-encoder window layout

For rm a row is a pair: its chosen and rejected sequences share the prompt,
hence its media, media index and positions, and the encoders run once
per pair (its tokens are then read by both rows of the 2B-row forward).

B must be divisible by the mesh axes that `batch` maps to, and by
`grad_accum_steps` times them for micro-batches to stay evenly sharded. On
one process host numpy arrays are fine; with several processes pass global
`jax.Array`s (e.g. `jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from omni_rrm_jax.models.lora import lora_dropout
from omni_rrm_jax.sharding.params import state_shardings as param_shardings
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, Rules, activation_sharding, spec_for
from omni_rrm_jax.train.guarded_update import guarded_update
from omni_rrm_jax.train.state import TrainState, train_state_shardings
from omni_rrm_jax.train.task_kind import TaskKind

Batch = dict[str, jax.Array]


def _micro_loss(graphdef, kind: TaskKind, center_coef: float, logits_chunk: int,
                target_logits: int):
  """loss(params, frozen, micro, normalizer, rng) -> (sum of micro losses / normalizer, aux).

  Dividing by the whole batch's normalizer (not the micro-batch's) makes the
  micro-batch gradients add up to exactly the big-batch gradient. Gradients
  are taken with respect to `params` only; `frozen` is read, never differentiated.
  The merge copies the variables, so the model's frozen ones belong to this
  trace too (an `nnx.vmap` inside the model, as the encoders' per-row call,
  refuses variables of an enclosing trace).
  """

  def loss_fn(params, frozen, micro: Batch, normalizer: jax.Array, rng: jax.Array):
    # LoRA dropout (the only stochastic layer) draws from the micro-batch's key.
    with lora_dropout(rng):
      loss_sum, aux = kind.loss(nnx.merge(graphdef, params, frozen, copy=True), micro,
                                center_coef, logits_chunk=logits_chunk,
                                target_logits=target_logits)
    return loss_sum / normalizer, aux

  return loss_fn


def split_micro(batch: Batch, n: int) -> Batch:
  """[B, ...] -> [n, B/n, ...], micro-batch k holding rows k, k+n, k+2n, ...

  Strided rather than contiguous so that each micro-batch spans every device
  of the batch axis instead of a contiguous block of them.
  """
  def one(x):
    if x.shape[0] % n:
      raise ValueError(f"batch size {x.shape[0]} is not divisible by grad_accum_steps={n}")
    return jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1)

  return jax.tree.map(one, batch)


_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def _counting_compiles(name: str) -> Iterator[list[int]]:
  """Counts XLA compilations of the jitted function `name` inside the block.

  `jax.jit`'s own cache size also grows when only argument placement changes
  (e.g. a donated state coming back from the previous step), which is no
  compilation; the backend-compile event is the real thing.
  """
  count = [0]

  def listener(event: str, duration: float, **kwargs) -> None:
    del duration
    if event == _COMPILE_EVENT and kwargs.get("fun_name") == f"jit({name})":
      count[0] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield count
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _batch_sharding(mesh: Mesh | None, rules: Rules):
  if mesh is None:
    return None
  # One spec for every leaf: only the leading (batch) dimension is sharded.
  return NamedSharding(mesh, spec_for(("batch",), rules, mesh=mesh))


class Step:
  """A step function, jitted once with in/out shardings on its first call.

  The state shardings follow from the parameters' logical-axis metadata, which
  travels inside the state, so they are derived from the first state passed in
  (unless given up front). Later calls reuse the same `jax.jit` object.

  Attributes:
    max_nonfinite_streak: the limit for `train.nonfinite_check` (train steps).
  """

  def __init__(self, fn: Callable, *, mesh: Mesh | None, rules: Rules,
               state_shardings: TrainState | None, donate: bool, returns_state: bool,
               max_nonfinite_streak: int | None = None):
    self._fn, self._mesh, self._rules = fn, mesh, rules
    self._state_shardings = state_shardings
    self._donate, self._returns_state = donate, returns_state
    self._jitted = None
    self._compiles = 0
    self.max_nonfinite_streak = max_nonfinite_streak

  def _jit(self, state: TrainState):
    if self._jitted is not None:
      return self._jitted
    donate = dict(donate_argnums=0) if self._donate else {}
    if self._mesh is None:
      self._jitted = jax.jit(self._fn, **donate)
      return self._jitted
    state_sh = self._state_shardings or train_state_shardings(state, self._mesh, self._rules)
    replicated = NamedSharding(self._mesh, PartitionSpec())
    out = (state_sh, replicated) if self._returns_state else replicated
    in_sh = (state_sh, _batch_sharding(self._mesh, self._rules))
    self._jitted = jax.jit(self._fn, in_shardings=in_sh, out_shardings=out, **donate)
    return self._jitted

  def num_compiles(self) -> int:
    """How many times the step was compiled: once per distinct batch shape."""
    return self._compiles

  def lower(self, state: TrainState, batch: Batch):
    """AOT-lowers the step (abstract inputs work), e.g. to check a pod config compiles."""
    return self._jit(state).lower(state, batch)

  def __call__(self, state: TrainState, batch: Batch):
    jitted = self._jit(state)
    with _counting_compiles(self._fn.__name__) as count:
      out = jitted(state, batch)
    self._compiles += count[0]
    return out


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, kind: TaskKind, *,
                    grad_accum_steps: int = 1, max_nonfinite_streak: int = 10,
                    mesh: Mesh | None = None, rules: Rules = DEFAULT_RULES,
                    schedule: optax.Schedule | None = None, center_coef: float = 0.0,
                    logits_chunk: int = 0, target_logits: int = 0,
                    state_shardings: TrainState | None = None) -> Step:
  """Builds the jitted `train_step(state, batch) -> (state, metrics)`.

  One optimizer update per call. The batch is split into `grad_accum_steps`
  strided micro-batches run under `jax.lax.scan`; their gradients are summed
  with the whole batch's denominator, so the update equals the big-batch one
  (token-weighted for sft). With one micro-batch there is no scan: the
  gradient of the whole batch is the update's, as is. The update goes
  through `guarded_update`: a non-finite loss or gradient norm skips it
  (params and optimizer state stay as they were), bumps `nonfinite_streak`
  and `nonfinite_total`, and sets `skipped`; a finite step resets the streak.
  The caller stops via `train.nonfinite_check` with `step.max_nonfinite_streak`.

  Args:
    graphdef: the model's graph definition (`init_train_state`).
    tx: the optimizer the state was created with.
    kind: the `TaskKind` (`train.task_kind`): its batch contract, loss,
      normalizer and metrics.
    grad_accum_steps: micro-batches per update; must divide the batch size.
    max_nonfinite_streak: recorded on the returned step for `train.nonfinite_check`.
    mesh: device mesh; None runs on the default device.
    rules: logical -> mesh axis rules for parameters and activations.
    schedule: the optimizer's learning-rate schedule, to log `learning_rate`.
    center_coef: rm only, the reward-centering coefficient.
    logits_chunk: sft only, positions per vocabulary-head chunk (0: all at once;
      see `models.token_logprobs`).
    target_logits: sft only, target positions a row given to the vocabulary head
      (0: every position; see `losses.causal_lm_head_token_losses`).
    state_shardings: optional precomputed `train_state_shardings`.

  Returns:
    A callable step, jitted once (on first call) with in/out shardings and the
    state donated. Metrics: the loss's metrics plus `grad_norm`, `skipped`,
    `nonfinite_streak`, `nonfinite_total`, `step` (after the update) and
    `learning_rate` (when `schedule` is given).
  """
  if grad_accum_steps < 1:
    raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
  loss_fn = _micro_loss(graphdef, kind, center_coef, logits_chunk, target_logits)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def _one_micro_batch(state: TrainState, batch: Batch, normalizer: jax.Array, rng: jax.Array):
    # The whole batch is the one micro-batch: no scan, no float32 accumulator
    # (0 + g is g), the same key. Loss and aux gain the micro-batch axis [1, ...].
    (loss, aux), grads = grad_fn(state.params, state.frozen, batch, normalizer, rng)
    return grads, loss[None], jax.tree.map(lambda x: x[None], aux)

  def _accumulated(state: TrainState, batch_ab: Batch, normalizer: jax.Array, rng_a: jax.Array):
    def accumulate(grads_acc, micro_and_rng):
      micro, rng = micro_and_rng
      (loss_k, aux_k), grads_k = grad_fn(state.params, state.frozen, micro, normalizer, rng)
      grads_acc = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grads_acc, grads_k)
      return grads_acc, (loss_k, aux_k)

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
    if mesh is not None:
      # Keep the scan carry sharded like the parameters, not replicated.
      zeros = jax.lax.with_sharding_constraint(zeros, param_shardings(zeros, mesh, rules))
    grads, (loss_a, aux) = jax.lax.scan(accumulate, zeros, (batch_ab, rng_a))
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
    return grads, loss_a, aux

  def train_step(state: TrainState, batch: Batch):
    kind.batch.check(batch)
    with activation_sharding(mesh, rules):
      normalizer = jnp.maximum(kind.normalizer(batch), 1e-9)
      batch_ab = split_micro(batch, grad_accum_steps)
      rng_a = jax.random.split(jax.random.fold_in(state.rng, state.step), grad_accum_steps)

      if grad_accum_steps == 1:
        grads, loss_a, aux = _one_micro_batch(state, batch, normalizer, rng_a[0])
      else:
        grads, loss_a, aux = _accumulated(state, batch_ab, normalizer, rng_a)
      loss = jnp.sum(loss_a)

    new_state, update_metrics = guarded_update(state, grads, loss, tx, schedule=schedule)
    metrics = kind.metrics(batch_ab, aux, center_coef)
    metrics["loss"] = loss
    metrics.update(update_metrics)
    return new_state, metrics

  return Step(train_step, mesh=mesh, rules=rules, state_shardings=state_shardings,
              donate=True, returns_state=True, max_nonfinite_streak=max_nonfinite_streak)


def make_eval_step(graphdef: nnx.GraphDef, kind: TaskKind, *, mesh: Mesh | None = None,
                   rules: Rules = DEFAULT_RULES, center_coef: float = 0.0,
                   logits_chunk: int = 0, target_logits: int = 0,
                   state_shardings: TrainState | None = None) -> Step:
  """Builds the jitted `eval_step(state, batch) -> metrics` (no update).

  Metrics are the kind's `evaluate` (`losses.bradley_terry_loss` for rm,
  `losses.causal_lm_loss` for sft) over the whole batch, `valid` respected.
  """

  def eval_step(state: TrainState, batch: Batch):
    kind.batch.check(batch)
    with activation_sharding(mesh, rules):
      return kind.evaluate(nnx.merge(graphdef, state.params, state.frozen), batch, center_coef,
                           logits_chunk=logits_chunk, target_logits=target_logits)

  return Step(eval_step, mesh=mesh, rules=rules, state_shardings=state_shardings,
              donate=False, returns_state=False)
