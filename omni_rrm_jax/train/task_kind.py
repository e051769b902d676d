"""What differs between the scalar reward model (`rm`) and judge SFT (`sft`), in one object.

  kind = task_kind(config.task)           # once, by name; then pass `kind` around
  encoder = ExampleEncoder(tok, max_length, kind.batch)
  step = make_train_step(graphdef, tx, kind)
  if kind.classifier: ...                 # the model has a score head

A `TaskKind` carries, for one kind of training:

  batch        its `core.batch_contract.BatchContract`: the keys a batch holds
               (required and optional), how examples are encoded (a pair per
               row, or a prompt and its target) and collated;
  classifier   whether the model is a `*ForSequenceClassification`
               (`models.architectures.Architecture.is_classifier`);
  loss         one micro-batch's summed loss and what its metrics need
               (`logits_chunk`: vocabulary-head positions per chunk, sft;
               `target_logits`: target positions a row given to the head, sft);
  normalizer   the whole batch's loss denominator (valid pairs, target tokens);
  metrics      the train metrics from the micro-batches' losses;
  evaluate     the eval metrics of one batch;
  eval_weight  the metric that weighs a batch in an eval average;
  headline     the eval metric the progress bar shows.

Code that must tell the kinds apart reads these fields; nothing compares task
names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from omni_rrm_jax.core.batch_contract import RM_BATCH, SFT_BATCH, BatchContract
from omni_rrm_jax.core.registry import Registry
from omni_rrm_jax.models.media_inputs import media_inputs
from omni_rrm_jax.models.token_logprobs import token_logprobs
from omni_rrm_jax.train import losses

Batch = dict[str, jax.Array]


def row_weights(batch: Batch) -> jax.Array:
  """[B] row weights (of packed rows: [B, S] segment weights): `valid` when
  the batch has it, else ones."""
  any_key = next(iter(batch.values()))
  if "valid" in batch:
    return batch["valid"].astype(jnp.float32)
  return jnp.ones(any_key.shape[:1], jnp.float32)


def rm_rewards(model: nnx.Module, batch: Batch) -> tuple[jax.Array, jax.Array]:
  """`(r_chosen_b, r_rejected_b)` from ONE forward over 2B rows ([B, S] each
  for packed rows).

  Rows are interleaved (c0, r0, c1, r1, ...) rather than concatenated, so each
  device scores its own pairs and the split needs no communication; a pair's
  media is encoded once and read by both of its rows.
  """
  ids_b2t = jnp.stack([batch["chosen_input_ids"], batch["rejected_input_ids"]], axis=1)
  mask_b2t = jnp.stack([batch["chosen_attention_mask"], batch["rejected_attention_mask"]], axis=1)
  b, _, t = ids_b2t.shape
  if "chosen_segment_ids" in batch:
    return _packed_rm_rewards(model, batch, ids_b2t.reshape(2 * b, t),
                              mask_b2t.reshape(2 * b, t))
  logits = model(ids_b2t.reshape(2 * b, t), attention_mask=mask_b2t.reshape(2 * b, t),
                 **media_inputs(model, batch, rows_per_example=2)).logits
  if logits.ndim != 2 or logits.shape[-1] != 1:
    raise ValueError(f"a reward model must return logits [2B, 1], got {logits.shape}; "
                     "use a *ForSequenceClassification model with num_labels=1")
  r_b2 = logits[:, 0].astype(jnp.float32).reshape(b, 2)
  return r_b2[:, 0], r_b2[:, 1]


def _packed_rm_rewards(model: nnx.Module, batch: Batch, ids_rt: jax.Array,
                       mask_rt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`(r_chosen_bs, r_rejected_bs)` [B, S] of packed pair rows (`data/packing.py`):
  segment j of chosen row b and of rejected row b is one pair."""
  b, s = batch["valid"].shape
  seg_rt = jnp.stack([batch["chosen_segment_ids"], batch["rejected_segment_ids"]],
                     axis=1).reshape(ids_rt.shape)
  # A packed pair row's segments start at the same slots on both sides, so the
  # row's media, media index and positions serve its chosen and rejected rows.
  logits = model(ids_rt, attention_mask=mask_rt, segment_ids=seg_rt, num_segments=s,
                 **media_inputs(model, batch, rows_per_example=2)).logits
  if logits.shape != (2 * b, s, 1):
    raise ValueError(f"a reward model over packed rows must return logits [2B, S, 1], got "
                     f"{logits.shape}; use a *ForSequenceClassification with num_labels=1")
  r_b2s = logits[..., 0].astype(jnp.float32).reshape(b, 2, s)
  return r_b2s[:, 0], r_b2s[:, 1]


def sft_targets(batch: Batch) -> jax.Array:
  """[B, T] target weights: loss_mask, minus padding, times row validity.

  In packed rows (`segment_ids`) validity is per segment, and a segment's
  first token is never a target: the logits before it belong to the
  previous segment.
  """
  mask_bt = batch["loss_mask"].astype(jnp.float32) * batch["attention_mask"].astype(jnp.float32)
  if "segment_ids" not in batch:
    return mask_bt * row_weights(batch)[:, None]
  seg_bt = batch["segment_ids"]
  valid_bs = batch["valid"].astype(jnp.float32)
  valid_bt = jnp.take_along_axis(valid_bs, jnp.maximum(seg_bt - 1, 0), axis=1) * (seg_bt > 0)
  continues_bt = jnp.concatenate(
      [jnp.zeros_like(seg_bt[:, :1], bool), seg_bt[:, 1:] == seg_bt[:, :-1]], axis=1)
  return mask_bt * valid_bt * continues_bt


def lm_hidden_states(model: nnx.Module, batch: Batch) -> jax.Array:
  """A causal LM's final hidden states [B, T, E] of a batch (its media, or its
  packed segments, too), without the vocabulary head:
  `model(...).logits == model.lm_logits(this)`."""
  packed = {"segment_ids": batch["segment_ids"]} if "segment_ids" in batch else {}
  kw = media_inputs(model, batch)
  if hasattr(model, "hidden_states"):  # the multimodal models (Qwen2.5-VL, Omni thinker)
    return model.hidden_states(batch["input_ids"], attention_mask=batch["attention_mask"],
                               **kw, **packed)
  return model.model(batch["input_ids"], batch["attention_mask"], **packed)


def sft_token_losses(model: nnx.Module, batch: Batch, logits_chunk: int = 0,
                     target_logits: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`(nll_bs, correct_bs, weight_bs)` [B, T-1] of a batch's targets (`sft_targets`),
  the vocabulary head applied `logits_chunk` positions at a time (0: at once), on
  each row's targets only with `target_logits` > 0 ([B, target_logits] then).

  A batch with response probes (`core.batch_contract.PROBE_KEYS`) has two more
  targets a row, appended as the last two columns: the probe word predicted
  from the hidden state at each probed prompt position."""
  h_bte = lm_hidden_states(model, batch)
  nll_bs, correct_bs, weight_bs = losses.causal_lm_head_token_losses(
      model.lm_logits, h_bte, batch["input_ids"], sft_targets(batch), chunk=logits_chunk,
      keep=target_logits)
  if "probe_positions" not in batch:
    return nll_bs, correct_bs, weight_bs
  h_bpe = jnp.take_along_axis(h_bte, batch["probe_positions"][..., None], axis=1)
  probe = token_logprobs(model.lm_logits, h_bpe, batch["probe_targets"])
  weight_bp = probe_weights(batch)
  keep_bp = weight_bp > 0
  return (jnp.concatenate([nll_bs, jnp.where(keep_bp, -probe.logp_bt, 0.0)], axis=1),
          jnp.concatenate([correct_bs, jnp.where(keep_bp, probe.correct_bt, 0.0)], axis=1),
          jnp.concatenate([weight_bs, weight_bp], axis=1))


def probe_weights(batch: Batch) -> jax.Array:
  """[B, 2] loss weights of a batch's response probes, times row validity."""
  return batch["probe_weights"].astype(jnp.float32) * row_weights(batch)[:, None]


# --- rm: Bradley-Terry on a sequence classifier ------------------------------


def _rm_loss(model: nnx.Module, micro: Batch, center_coef: float, logits_chunk: int = 0,
             target_logits: int = 0):
  del logits_chunk, target_logits  # sft only
  r_c, r_r = rm_rewards(model, micro)
  w_b = row_weights(micro)
  margin_b = micro.get("margin")
  if margin_b is not None:
    # A padding row's margin may be garbage; keep it out of the arithmetic.
    margin_b = jnp.where(w_b > 0, margin_b.astype(jnp.float32), 0.0)
  loss_b = losses.bradley_terry_per_example(r_c, r_r, margin_b=margin_b, center_coef=center_coef)
  return jnp.sum(jnp.where(w_b > 0, w_b * loss_b, 0.0)), (r_c, r_r)


def _rm_normalizer(batch: Batch) -> jax.Array:
  return jnp.sum(row_weights(batch))


def _rm_metrics(batch_ab: Batch, aux, center_coef: float) -> dict[str, jax.Array]:
  r_c_ab, r_r_ab = aux
  flat = lambda x: x.reshape(-1)  # noqa: E731
  margin = batch_ab.get("margin")
  valid = batch_ab.get("valid")
  _, m = losses.bradley_terry_loss(
      flat(r_c_ab), flat(r_r_ab), margin_b=None if margin is None else flat(margin),
      center_coef=center_coef, valid_b=None if valid is None else flat(valid))
  return m


def _rm_evaluate(model: nnx.Module, batch: Batch, center_coef: float,
                 logits_chunk: int = 0, target_logits: int = 0) -> dict[str, jax.Array]:
  del logits_chunk, target_logits  # sft only
  r_c, r_r = rm_rewards(model, batch)
  _, metrics = losses.bradley_terry_loss(r_c, r_r, margin_b=batch.get("margin"),
                                         center_coef=center_coef, valid_b=batch.get("valid"))
  return metrics


# --- sft: next-token cross-entropy on a causal LM ----------------------------


def _sft_loss(model: nnx.Module, micro: Batch, center_coef: float, logits_chunk: int = 0,
              target_logits: int = 0):
  del center_coef  # rm only
  nll_bs, correct_bs, weight_bs = sft_token_losses(model, micro, logits_chunk, target_logits)
  loss_sum = jnp.sum(weight_bs * nll_bs)
  return loss_sum, (loss_sum, jnp.sum(weight_bs * correct_bs), jnp.sum(weight_bs))


def _sft_normalizer(batch: Batch) -> jax.Array:
  probes = jnp.sum(probe_weights(batch)) if "probe_positions" in batch else 0.0
  return jnp.sum(sft_targets(batch)[:, 1:]) + probes


def _sft_metrics(batch_ab: Batch, aux, center_coef: float) -> dict[str, jax.Array]:
  del batch_ab, center_coef
  loss_sum, correct, count = (jnp.sum(a) for a in aux)
  n = jnp.maximum(count, 1e-9)
  return {"loss": loss_sum / n, "token_accuracy": correct / n, "num_tokens": count}


def _sft_evaluate(model: nnx.Module, batch: Batch, center_coef: float,
                  logits_chunk: int = 0, target_logits: int = 0) -> dict[str, jax.Array]:
  del center_coef
  _, metrics = losses.causal_lm_metrics(
      *sft_token_losses(model, batch, logits_chunk, target_logits))
  return metrics


@dataclasses.dataclass(frozen=True)
class TaskKind:
  """One kind of RM/SFT training (see the module docstring).

  Attributes:
    name: the `config.task` that selects it.
    batch: the batch contract of its examples and batches.
    classifier: the model is a sequence classifier (a score head), not a causal LM.
    loss: `(model, micro, center_coef, logits_chunk=0, target_logits=0) -> (summed
      loss, aux)` of one micro-batch; the step divides by `normalizer` of the
      whole batch. `logits_chunk` > 0 applies a causal LM's vocabulary head that
      many positions at a time (`models.token_logprobs`), `target_logits` > 0 on
      that many target positions a row only; a classifier ignores both.
    normalizer: `(batch) -> []` the whole batch's loss denominator (before the
      1e-9 floor the step applies).
    metrics: `(batch_ab, aux_a, center_coef) -> dict`, train metrics from the
      micro-batches ([A, B/A, ...] batch, stacked aux).
    evaluate: `(model, batch, center_coef, logits_chunk=0, target_logits=0) -> dict`, eval
      metrics of one batch.
    eval_weight: the metric that weighs a batch in an eval average.
    headline: the eval metric shown on the progress bar.
  """
  name: str
  batch: BatchContract
  classifier: bool
  loss: Callable[..., tuple[jax.Array, Any]]
  normalizer: Callable[[Batch], jax.Array]
  metrics: Callable[[Batch, Any, float], dict[str, jax.Array]]
  evaluate: Callable[..., dict[str, jax.Array]]
  eval_weight: str
  headline: str


RM = TaskKind("rm", RM_BATCH, classifier=True, loss=_rm_loss, normalizer=_rm_normalizer,
              metrics=_rm_metrics, evaluate=_rm_evaluate, eval_weight="num_pairs",
              headline="accuracy")
SFT = TaskKind("sft", SFT_BATCH, classifier=False, loss=_sft_loss, normalizer=_sft_normalizer,
               metrics=_sft_metrics, evaluate=_sft_evaluate, eval_weight="num_tokens",
               headline="token_accuracy")

TASK_KINDS: Registry[TaskKind] = Registry("task kind")
TASK_KINDS.add(RM.name, RM)
TASK_KINDS.add(SFT.name, SFT)


def task_kind(name: str) -> TaskKind:
  """The `TaskKind` named `name`, or a one-line `KeyError` listing the known ones."""
  return TASK_KINDS.get(name)


def kind_for_model(is_classifier: bool) -> TaskKind:
  """The kind that trains (and evaluates) a model: RM for a sequence classifier
  (`Architecture.is_classifier`), SFT for a causal LM."""
  return RM if is_classifier else SFT
