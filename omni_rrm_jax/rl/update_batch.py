"""The batch a GRPO update trains on, built from a step's kept groups.

  prepare = UpdateBatchBuilder(advantage_fn=..., group_size=G, rows=P * G, ...)
  batch = prepare(drawn.batch)                   # advantages, loss mask, padding, width cut
  batch.add_ref_logp((graphdef, ref_params), mesh=mesh, rules=rules)   # beta > 0
  minibatch = batch.rows_of(process_share(rows_m))                     # host arrays

Every array here is global (all processes hold the same rows, `rl/multihost_rows.py`);
each process feeds its share of every global minibatch to the step, so the shares
depend on global row numbers only. A multimodal policy's prompt media are batched
per minibatch at the batch's prompt width and the global batch's buckets; a row
sampled on another process has its prompt example encoded again from its record.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from omni_rrm_jax.core.batch_contract import GRPO_BATCH
from omni_rrm_jax.core.buckets import round_up
from omni_rrm_jax.core.multihost import agree_max
from omni_rrm_jax.rl import rollout
from omni_rrm_jax.rl.multihost_rows import all_rows, fill_objects, process_share
from omni_rrm_jax.rl.prompt_media import PROMPT_MEDIA, PromptMedia
from omni_rrm_jax.rl.shaping import mask_truncated
from omni_rrm_jax.sampling.prompts import media_needs
from omni_rrm_jax.sampling.scoring import score_completions
from omni_rrm_jax.sharding.batch import to_global


class UpdateBatch:
  """A step's padded update rows and how to cut them into minibatches.

  Attributes:
    rows: the global rows by key (`GRPO_BATCH` keys, then host columns).
    width: the prompt columns kept (the bucket of the longest prompt).
    keys: the keys an update reads (`GRPO_BATCH.required`, plus `ref_logp`
      once `add_ref_logp` ran).
  """

  def __init__(self, rows: dict[str, np.ndarray], width: int, *,
               prompt_media: PromptMedia | None, encode_prompt: Callable[[int], Any],
               group_size: int):
    self.rows, self.width = rows, width
    self.keys = GRPO_BATCH.required
    self._prompt_media, self._encode_prompt = prompt_media, encode_prompt
    self._group_size = group_size

  def media_rows(self, rows_r: np.ndarray) -> dict:
    """The prompt media of rows `rows_r` (this process's share of a global batch),
    batched at this width and the global batch's buckets (text: none)."""
    if PROMPT_MEDIA not in self.rows:
      return {}
    examples = fill_objects(self.rows[PROMPT_MEDIA], rows_r,
                            lambda row: self._encode_prompt(int(self.rows["index"][row])))
    return self._prompt_media.collate(examples, self.width,
                                      min_needs=agree_max(media_needs(examples)))

  def rows_of(self, rows_r: np.ndarray) -> dict:
    """An update's host batch: rows `rows_r` of the update keys, with their media."""
    return {**{k: self.rows[k][rows_r] for k in self.keys}, **self.media_rows(rows_r)}

  def add_ref_logp(self, ref_model, *, mesh, rules, logits_chunk: int = 0) -> None:
    """Scores the completions under the frozen reference (`(graphdef, params)`)
    into `ref_logp`: each process its share, then every process holds all
    (the vocabulary head `logits_chunk` positions at a time, 0: at once)."""
    g = self._group_size
    mine = process_share(np.arange(len(self.rows["adv"])))
    seqs = to_global({k: self.rows[k][mine] for k in self.keys[:4]}, mesh, rules)
    # Groups are whole here: each prompt's media encoded once for its G rows.
    ref_media = to_global(self.media_rows(mine[::g]), mesh, rules)
    self.rows["ref_logp"] = all_rows(score_completions(
        ref_model, seqs["prompt_ids"], seqs["prompt_mask"],
        seqs["completion_ids"], seqs["completion_mask"], mesh=mesh, rules=rules,
        media=ref_media or None, rows_per_example=g, logits_chunk=logits_chunk))
    self.keys += ("ref_logp",)


class UpdateBatchBuilder:
  """Turns a step's kept groups into its `UpdateBatch`.

  Args:
    advantage_fn: an estimator of `rl.advantages.ADVANTAGE_ESTIMATORS`.
    group_size: completions per prompt (G).
    rows: the update's fixed row count (prompts per step x G); fewer kept
      rows are padded with rows that carry no loss.
    mask_truncated: leave truncated completions out of the loss.
    prompt_bucket, max_prompt_length: the prompt width's bucket and cap.
    prompt_media: batches a multimodal policy's prompt media (None: text).
    records, encoder, recipe: how a row's prompt example is encoded again
      from its record (`index`) when another process sampled it.
    reward_weights: {reward name: weight} to take each reward function's
      advantages on its own (`advantage_fn` over its `reward/<name>` column)
      and sum them weighted, the overlong penalty (when on) as one more term;
      None: one advantage of the weighted total (`rewards`). Apart, a
      high-variance reward (a judge's content reward near chance) no longer
      drowns the others' signal within a group.
  """

  def __init__(self, *, advantage_fn: Callable, group_size: int, rows: int,
               mask_truncated: bool, prompt_bucket: int, max_prompt_length: int,
               prompt_media: PromptMedia | None, records, encoder, recipe: str,
               reward_weights: Mapping[str, float] | None = None):
    self._advantage_fn, self._group_size, self._rows = advantage_fn, group_size, rows
    self._reward_weights = dict(reward_weights) if reward_weights else None
    self._mask_truncated = mask_truncated
    self._prompt_bucket, self._max_prompt_length = prompt_bucket, max_prompt_length
    self._prompt_media = prompt_media
    self._records, self._encoder, self._recipe = records, encoder, recipe

  def _encode_prompt(self, index: int):
    return rollout.encode_prompt(self._encoder, self._records[index], self._recipe,
                                 self._max_prompt_length)

  def advantages(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """[rows] float32 advantages of `batch`'s kept groups (see `reward_weights`)."""
    adv = lambda r: np.asarray(self._advantage_fn(r, group_size=self._group_size),  # noqa: E731
                               np.float32)
    if self._reward_weights is None:
      return adv(batch["rewards"])
    total = sum(w * adv(batch[f"reward/{name}"]) for name, w in self._reward_weights.items())
    if "overlong_penalty" in batch:
      total = total + adv(batch["overlong_penalty"])
    return np.asarray(total, np.float32)

  def __call__(self, batch: dict[str, np.ndarray]) -> UpdateBatch:
    """Advantages, loss mask, padding to the fixed row count, and the prompts
    cut to their bucket, for kept groups `batch` (G consecutive rows each)."""
    batch["adv"] = self.advantages(batch)
    batch["loss_mask"] = batch["completion_mask"]
    if self._mask_truncated:
      batch["loss_mask"] = np.asarray(mask_truncated(batch["loss_mask"], batch["truncated"]))
    batch = rollout.pad_groups(batch, self._rows)
    # The sampler stores full-width prompts; the update needs this batch's bucket only.
    width = round_up(int(batch["prompt_mask"].sum(1).max()), self._prompt_bucket,
                     self._max_prompt_length)
    batch["prompt_ids"] = batch["prompt_ids"][:, -width:]
    batch["prompt_mask"] = batch["prompt_mask"][:, -width:]
    return UpdateBatch(batch, width, prompt_media=self._prompt_media,
                       encode_prompt=self._encode_prompt, group_size=self._group_size)
