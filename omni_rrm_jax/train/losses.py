"""Reward-model and language-model losses, as pure functions in float32.

Each loss comes in two layers: a per-example (or per-token) function that the
train step sums itself when it accumulates gradients over micro-batches, and a
batch-mean function that also returns metrics.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from omni_rrm_jax.core.argmax import argmax_last
from omni_rrm_jax.models.token_logprobs import token_logprobs


def _weights(valid: jax.Array | None, shape) -> jax.Array:
  if valid is None:
    return jnp.ones(shape, jnp.float32)
  return valid.astype(jnp.float32)


def bradley_terry_per_example(r_chosen_b: jax.Array, r_rejected_b: jax.Array, *,
                              margin_b: jax.Array | None = None,
                              center_coef: float = 0.0) -> jax.Array:
  """-log σ(r_c - r_r - margin) + center_coef · (r_c + r_r)², per pair, in float32.

  The centering term (as in the InstructGPT / "reward centering" recipe) pulls
  the mean reward of each pair towards zero so that scores stay comparable.
  """
  r_c = r_chosen_b.astype(jnp.float32)
  r_r = r_rejected_b.astype(jnp.float32)
  z_b = r_c - r_r
  if margin_b is not None:
    z_b = z_b - margin_b.astype(jnp.float32)
  loss_b = -jax.nn.log_sigmoid(z_b)
  if center_coef:
    loss_b = loss_b + center_coef * jnp.square(r_c + r_r)
  return loss_b


def bradley_terry_loss(r_chosen_b: jax.Array, r_rejected_b: jax.Array, *,
                       margin_b: jax.Array | None = None, center_coef: float = 0.0,
                       valid_b: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """Pairwise Bradley-Terry loss for a scalar reward model.

  Args:
    r_chosen_b: [B] rewards of the preferred responses.
    r_rejected_b: [B] rewards of the other responses.
    margin_b: optional [B] required reward gap (e.g. from preference strength).
    center_coef: λ of the centering term λ·(r_c + r_r)².
    valid_b: optional [B] example weights; 0 marks padding rows that were added
      to fill a fixed batch shape and must count for nothing.

  Returns:
    `(loss, metrics)`: the weighted mean loss and `loss`, `accuracy`
    (fraction with r_c > r_r), `margin_mean` (mean r_c - r_r), `reward_mean`
    and `reward_std` (population std over chosen and rejected together).
  """
  w_b = _weights(valid_b, r_chosen_b.shape)
  keep_b = w_b > 0
  if margin_b is not None:
    # A padding row's margin may be garbage; keep it out of the arithmetic.
    margin_b = jnp.where(keep_b, margin_b.astype(jnp.float32), 0.0)
  r_c = r_chosen_b.astype(jnp.float32)
  r_r = r_rejected_b.astype(jnp.float32)
  loss_b = bradley_terry_per_example(r_c, r_r, margin_b=margin_b, center_coef=center_coef)
  n = jnp.maximum(jnp.sum(w_b), 1e-9)

  def wmean(x_b):
    return jnp.sum(jnp.where(keep_b, w_b * x_b, 0.0)) / n

  loss = wmean(loss_b)
  reward_mean = 0.5 * wmean(r_c + r_r)
  reward_var = 0.5 * wmean(jnp.square(r_c - reward_mean) + jnp.square(r_r - reward_mean))
  metrics = {
      "loss": loss,
      "accuracy": wmean((r_c > r_r).astype(jnp.float32)),
      "margin_mean": wmean(r_c - r_r),
      "reward_mean": reward_mean,
      "reward_std": jnp.sqrt(reward_var),
      "num_pairs": jnp.sum(w_b),
  }
  return loss, metrics


def causal_lm_token_losses(logits_btv: jax.Array, input_ids_bt: jax.Array,
                           loss_mask_bt: jax.Array
                           ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-target next-token cross-entropy, correctness and weight.

  Shift convention: the logits at position t predict token t+1, and
  `loss_mask_bt[:, t]` says whether token t is a target. Token 0 is never a
  target (nothing predicts it), so `loss_mask_bt[:, 0]` is ignored. Outputs
  have T-1 columns; column j is the prediction of token j+1 from logits j.

  Args:
    logits_btv: [B, T, V] logits in any float dtype; upcast to float32.
    input_ids_bt: [B, T] token ids.
    loss_mask_bt: [B, T] 1 (or a weight) where the token is a target.

  Returns:
    `(nll_bs, correct_bs, weight_bs)`, each [B, T-1] float32: the negative
    log-likelihood of each target, whether argmax predicted it, and its weight.
  """
  logits_bsv = logits_btv[:, :-1].astype(jnp.float32)
  target_bs = input_ids_bt[:, 1:]
  weight_bs = loss_mask_bt[:, 1:].astype(jnp.float32)
  log_z_bs = jax.nn.logsumexp(logits_bsv, axis=-1)
  target_logit_bs = jnp.take_along_axis(logits_bsv, target_bs[..., None], axis=-1)[..., 0]
  nll_bs = log_z_bs - target_logit_bs
  correct_bs = (argmax_last(logits_bsv) == target_bs).astype(jnp.float32)
  # Non-target positions may hold padding logits; zero them rather than weight them.
  keep_bs = weight_bs > 0
  return (jnp.where(keep_bs, nll_bs, 0.0), jnp.where(keep_bs, correct_bs, 0.0),
          jnp.where(keep_bs, weight_bs, 0.0))


def causal_lm_head_token_losses(head: Callable[[jax.Array], jax.Array], h_bte: jax.Array,
                                input_ids_bt: jax.Array, loss_mask_bt: jax.Array, *,
                                chunk: int = 0,
                                keep: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`causal_lm_token_losses` from final hidden states and the vocabulary head.

  The same shift convention and outputs, but the logits are never held
  whole: with `chunk > 0` they are computed `chunk` positions at a time, in
  the forward and the backward pass (`models.token_logprobs`), so memory
  holds at most a [B, chunk, V] slice instead of [B, T, V]. With `keep > 0`
  the head sees only each row's target positions (in order, then non-targets
  to fill `keep` slots, weighted 0): the same losses of the targets, for a
  head over `keep` positions instead of T - 1. A row with more than `keep`
  targets would lose its last ones; the encoder skips such examples
  (`ExampleEncoder(max_target_tokens=...)`).

  Args:
    head: hidden states [B, C, E] -> logits [B, C, V] (a model's `lm_logits`).
    h_bte: [B, T, E] final hidden states.
    input_ids_bt: [B, T] token ids.
    loss_mask_bt: [B, T] 1 (or a weight) where the token is a target.
    chunk: positions per head call; 0 projects every position at once.
    keep: target positions per row given to the head (static); 0: all T - 1.

  Returns:
    `(nll_bs, correct_bs, weight_bs)`, each [B, T-1] float32 ([B, keep] with `keep`).
  """
  h_bse, targets_bs = h_bte[:, :-1], input_ids_bt[:, 1:]
  weight_bs = loss_mask_bt[:, 1:].astype(jnp.float32)
  if 0 < keep < targets_bs.shape[1]:
    # Target positions first, each row's in their order (a stable sort on "not a target").
    order_bk = jnp.argsort(weight_bs <= 0, axis=1, stable=True)[:, :keep]
    h_bse = jnp.take_along_axis(h_bse, order_bk[..., None], axis=1)
    targets_bs = jnp.take_along_axis(targets_bs, order_bk, axis=1)
    weight_bs = jnp.take_along_axis(weight_bs, order_bk, axis=1)
  out = token_logprobs(head, h_bse, targets_bs, chunk=chunk)
  keep_bs = weight_bs > 0
  return (jnp.where(keep_bs, -out.logp_bt, 0.0), jnp.where(keep_bs, out.correct_bt, 0.0),
          jnp.where(keep_bs, weight_bs, 0.0))


def causal_lm_metrics(nll_bs: jax.Array, correct_bs: jax.Array,
                      weight_bs: jax.Array) -> tuple[jax.Array, dict]:
  """Token-weighted mean loss and `loss`, `token_accuracy`, `num_tokens` of token losses."""
  num_tokens = jnp.sum(weight_bs)
  n = jnp.maximum(num_tokens, 1e-9)
  loss = jnp.sum(weight_bs * nll_bs) / n
  metrics = {
      "loss": loss,
      "token_accuracy": jnp.sum(weight_bs * correct_bs) / n,
      "num_tokens": num_tokens,
  }
  return loss, metrics


def causal_lm_loss(logits_btv: jax.Array, input_ids_bt: jax.Array, loss_mask_bt: jax.Array,
                   *, valid_b: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """Token-averaged next-token cross-entropy over the whole batch.

  See `causal_lm_token_losses` for the shift convention. Every target token in
  the batch weighs the same (long answers count more than short ones), which
  is what makes micro-batch accumulation exact.

  Args:
    logits_btv: [B, T, V] logits.
    input_ids_bt: [B, T] token ids.
    loss_mask_bt: [B, T] 1 where token t is a target (e.g. answer tokens, not
      the prompt and not padding).
    valid_b: optional [B] row weights; 0 drops a padding row.

  Returns:
    `(loss, metrics)` with `loss`, `token_accuracy` and `num_tokens`.
  """
  mask_bt = loss_mask_bt.astype(jnp.float32)
  if valid_b is not None:
    mask_bt = mask_bt * valid_b.astype(jnp.float32)[:, None]
  return causal_lm_metrics(*causal_lm_token_losses(logits_btv, input_ids_bt, mask_bt))
