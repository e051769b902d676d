"""The GRPO loop (task `grpo`): rollouts, host rewards, group advantages, policy updates.

  omni-rrm --config=configs/grpo.py:tiny --workdir=DIR

Reads top to bottom: mesh, data (prompt stream, rewards), policy, reference and
optimizer, restore, loop, final eval and export. One step:

  rollout   draw prompts, sample G completions each with the current params
            (with dynamic sampling: drop groups whose rewards are all equal
            and draw more prompts, up to `shaping.max_rounds` rounds);
  reward    decode, score on the host (`rewards.REWARDS` by name, weighted,
            plus an optional scalar RM), overlong penalty; group advantages;
  train     `grpo.num_iterations` passes of `grpo.num_minibatches` updates,
            with the sampler's log-probs as the old policy and, for beta > 0,
            KL to a frozen copy of the initial params.

A multimodal policy (Qwen2.5-VL, the Qwen2.5-Omni thinker) samples image,
video and audio records with their media: prompts are encoded with the
training tasks' `MediaSpec`, the sampler runs the encoders once per prompt,
and the update re-encodes each row's prompt media. Records whose media fail
(missing or corrupt files, too many patches, audio for a vision model) are
skipped and counted per reason (`prompts_skipped`, `skipped_prompts`). A text
policy leaves media records out. A multimodal scalar RM (`reward.model_path`)
scores each completion with its prompt's media (`rl/model_reward.py`); prompts
whose media it cannot use score its minimum and are counted
(`model_reward_unscored`).

On several processes (one per host) each samples, decodes and scores its rows
of every global prompt batch; the rows are then gathered to every process
(`rl/multihost_rows.py`), so dynamic sampling, advantages and metrics are
decided on the global batch, and each process feeds its share of every global
minibatch to the update. A run matches the one-process run on the same mesh
(the same prompts, completions and decisions; parameters up to float
rounding in the collectives); process 0 writes the files.

Pointed at a workdir with a checkpoint, it resumes exactly (policy, optimizer,
prompt stream; rollout keys are `fold_in(rng, step)`); SIGTERM saves and exits.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from flax import nnx

from omni_rrm_jax.assembly.inputs import task_inputs
from omni_rrm_jax.assembly.models import build_model
from omni_rrm_jax.config.validate import check as check_settings
from omni_rrm_jax.core import workdir_lock
from omni_rrm_jax.core.batch_contract import GRPO_BATCH, SFT_BATCH
from omni_rrm_jax.core.buckets import round_up
from omni_rrm_jax.core.metric_writers import MetricWriter
from omni_rrm_jax.core.multihost import agree_max, is_writer, written_by_one
from omni_rrm_jax.data.tokenize import INVALID_REASONS, ExampleEncoder
from omni_rrm_jax.models.hf_save import save_pretrained
from omni_rrm_jax.rl import rollout
from omni_rrm_jax.rl.advantages import ADVANTAGE_ESTIMATORS
from omni_rrm_jax.rl.grpo_step import make_grpo_step
from omni_rrm_jax.rl.model_reward import ModelReward
from omni_rrm_jax.rl.multihost_rows import (
    all_rows, fill_objects, gather_rows, process_share, total_counts)
from omni_rrm_jax.rl.prompt_media import PROMPT_MEDIA, PromptMedia
from omni_rrm_jax.rl.shaping import fill_groups, mask_truncated
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.prompts import media_needs
from omni_rrm_jax.sampling.scoring import score_completions
from omni_rrm_jax.sharding.batch import to_global
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.sharding.rules import rules_from_config
from omni_rrm_jax.train.checkpointing import Checkpointer
from omni_rrm_jax.train.optimizer import make_optimizer
from omni_rrm_jax.train.preemption import PreemptionGuard
from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.step import check_nonfinite

log = logging.getLogger(__name__)

# Train-step metrics averaged over a step's updates; the rest are taken from the last one.
_MEAN_OVER_UPDATES = ("loss", "kl_mean", "clip_frac_low", "clip_frac_high", "ratio_mean",
                      "grad_norm", "num_tokens")
_EVAL_KEY = 2**31 - 1  # folded into the rng for evaluation rollouts, apart from train steps


def _text_records(records, name: str):
  """A text policy cannot see media: records with media are left out (and counted)."""
  kept = [r for r in records if r.modality == "text"]
  if len(kept) < len(records):
    log.warning("%s: %d records with media skipped (the policy is a text model)", name,
                len(records) - len(kept))
  return kept


def _concat(batches):
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def valid_groups(batch: dict, group_size: int, skipped: collections.Counter | None = None):
  """The round's groups whose prompts could be built; the others are counted by reason."""
  valid_g = batch["valid"][::group_size] > 0
  if skipped is not None:
    for reason in batch["invalid_reason"][::group_size][~valid_g]:
      skipped[INVALID_REASONS[int(reason)]] += 1
  if valid_g.all():
    return batch
  keep_b = np.repeat(valid_g, group_size)
  return {k: v[keep_b] for k, v in batch.items()}


def reward_metrics(sampled: dict, names, group_size: int) -> dict[str, float]:
  """Means and stds (population, ddof 0) of every reward over all completions a
  step sampled, and their number (with the std, the standard error of a mean)."""
  out = {"reward/total_mean": float(np.mean(sampled["rewards"])),
         "reward/total_std": float(np.std(sampled["rewards"])),
         "num_completions": int(np.size(sampled["rewards"]))}
  for name in names:
    values = sampled[f"reward/{name}"]
    out[f"reward/{name}_mean"], out[f"reward/{name}_std"] = float(values.mean()), float(values.std())
  out["completion_length"] = float(sampled["lengths"].mean())
  out["truncated_frac"] = float(sampled["truncated"].mean())
  for key, name in (("parse_failed", "parse_failure_rate"),
                    ("overlong_penalty", "overlong_penalty_mean")):
    if key in sampled:
      out[name] = float(sampled[key].mean())
  rewards_gk = sampled["rewards"].reshape(-1, group_size)
  out["zero_variance_group_frac"] = float(np.mean(rewards_gk.max(-1) == rewards_gk.min(-1)))
  return out


def run(config, workdir: str) -> dict:
  """GRPO per `config` in `workdir`; returns a summary dict."""
  check_settings(config, process_count=jax.process_count(), device_count=jax.device_count())
  os.makedirs(workdir, exist_ok=True)
  is_main = is_writer()
  # One run per workdir; a resumed run must be the same run (up to its length,
  # logging and evaluation) unless checkpoint.allow_config_change.
  written_by_one("the workdir lock", lambda: workdir_lock.hold(workdir))
  config_json = config.to_json_best_effort(sort_keys=True)
  ckpt = Checkpointer(workdir, save_every=config.checkpoint.every,
                      keep=config.checkpoint.keep,
                      async_save=config.checkpoint.async_save)
  ckpt.check_config(config_json, allow_change=config.checkpoint.allow_config_change)
  ro, sh, gr = config.rollout, config.shaping, config.grpo
  recipe, g = config.data.recipe, ro.num_generations
  if recipe not in rollout.RECIPES:
    raise ValueError(f"unknown data.recipe {recipe!r}; known: {', '.join(rollout.RECIPES)}")

  if config.optim.grad_accum_steps != 1:
    raise ValueError(f"optim.grad_accum_steps={config.optim.grad_accum_steps}: GRPO splits a "
                     "step's rollouts with grpo.num_minibatches; set it to 1")

  # --- Mesh --------------------------------------------------------------
  mesh = make_mesh(dict(config.mesh))
  rules = rules_from_config(dict(config.rules))
  n_proc = jax.process_count()  # prompts_per_step divides by it (config/validate.py)
  n_prompts = ro.prompts_per_step // n_proc  # this process's prompts per round
  rows = ro.prompts_per_step * g  # completions a step trains on, over all processes
  if rows % (gr.num_minibatches * n_proc):
    raise ValueError(f"{rows} completions per step do not split into "
                     f"grpo.num_minibatches={gr.num_minibatches} minibatches of equal shares "
                     f"for {n_proc} processes")

  # --- Data: prompt stream and rewards ------------------------------------
  inputs = task_inputs(model=config.model, data=config.data, media=config.media,
                       tokenizer=config.tokenizer, workdir=workdir, classifier=False)
  train_records, eval_records, counters = (inputs.train_records, inputs.eval_records,
                                           inputs.counters)
  tokenizer, tokenizer_dir = inputs.tokenizer, inputs.tokenizer_dir
  # A multimodal policy decodes media in the prompt workers (None: a text policy).
  spec = inputs.media
  prompt_media = PromptMedia.from_spec(spec, config.media.patch_buckets) if spec else None
  if spec is None:
    train_records = _text_records(train_records, "train")
    eval_records = _text_records(eval_records, "eval")
  encoder = ExampleEncoder(tokenizer, config.data.max_prompt_length, SFT_BATCH, media=spec)
  prompt_kw = dict(recipe=recipe, max_prompt_length=config.data.max_prompt_length,
                   batch_size=n_prompts, worker_count=config.data.worker_count,
                   process_index=jax.process_index(), process_count=n_proc)
  prompt_ds = rollout.make_prompt_dataset(train_records, encoder, seed=config.data.seed,
                                          **prompt_kw)
  n_eval = min(config.eval.num_prompts, len(eval_records)) // ro.prompts_per_step
  eval_batches = (list(rollout.make_prompt_dataset(
      eval_records[:n_eval * ro.prompts_per_step], encoder, seed=0, shuffle=False,
      num_epochs=1, **prompt_kw)) if n_eval else [])
  extra, rm = {}, None
  if config.reward.model_path:
    # A multimodal RM decodes the prompts' media with the data settings the
    # training tasks share (the RM's own when it was trained with the defaults).
    rm = ModelReward(config.reward.model_path, batch_size=config.reward.model_batch_size,
                     max_length=config.reward.model_max_length, bucket=config.reward.model_bucket,
                     mesh=mesh, rules=rules, dtype=config.model.dtype,
                     media_root=inputs.media_root,
                     patch_buckets=config.media.patch_buckets,
                     audio_frame_buckets=config.media.audio_frame_buckets,
                     media_overrides=config.media.preprocess)
    extra["model_reward"] = (rm, config.reward.model_weight)
  scorer = rollout.RewardScorer(
      config.reward.functions, recipe, extra=extra,
      overlong=(ro.max_new_tokens, sh.overlong_cache) if sh.overlong_penalty else None)
  sampling = SamplingParams(temperature=ro.temperature, top_k=ro.top_k, top_p=ro.top_p,
                            max_new_tokens=ro.max_new_tokens, num_samples=g)
  gen_kw = dict(sampling=sampling, eos_ids=(tokenizer.eos_token_id,),
                pad_id=tokenizer.pad_token_id, bucket=config.data.prompt_bucket,
                max_prompt_length=config.data.max_prompt_length, mesh=mesh, rules=rules,
                media=prompt_media)

  # --- Policy, reference and optimizer ------------------------------------
  model = build_model(config.model, tokenizer, mesh, rules, classifier=False, seed=config.seed)
  updates_per_step = gr.num_iterations * gr.num_minibatches
  tx, schedule = make_optimizer(dict(config.optim),
                                total_steps=config.train.num_steps * updates_per_step)
  graphdef, state = init_train_state(model, tx, config.seed, mesh=mesh, rules=rules)
  del model  # the state holds the only copy of the weights from here on
  # The reference is the initial policy, rebuilt identically on resume.
  ref_params = jax.tree.map(jnp.copy, state.params) if gr.beta > 0 else None
  grpo_step = make_grpo_step(
      graphdef, tx, loss_type=gr.loss_type, epsilon_low=gr.epsilon_low,
      epsilon_high=gr.epsilon_high, delta=gr.delta or None, beta=gr.beta,
      kl_estimator=gr.kl_estimator, max_completion_length=ro.max_new_tokens,
      on_policy=updates_per_step == 1, max_nonfinite_streak=config.train.max_nonfinite_streak,
      mesh=mesh, rules=rules, schedule=schedule)
  advantage_fn = ADVANTAGE_ESTIMATORS.get(gr.advantage)

  # --- Restore -----------------------------------------------------------
  prompt_iter = iter(prompt_ds)
  start = 0
  state, latest = ckpt.resume(state, prompt_iter)
  if latest is not None:
    start = latest  # checkpoints are numbered by GRPO steps (each several updates)
    log.info("resumed from step %d in %s", start, workdir)

  timers = collections.Counter()
  skipped = collections.Counter()  # training prompt draws skipped, by reason

  def sample(params, prompts, rng, records, skipped=None):
    """One rollout round: every process generates, decodes and scores its
    prompts (timed apart), then all hold the round's rows of every process,
    so what follows is decided on the global batch; None when no prompt of
    the round could be built."""
    t = time.perf_counter()
    batch = rollout.generate_round((graphdef, params), prompts, rng=rng, **gen_kw)
    texts = rollout.decode(tokenizer, batch)
    timers["rollout"] += time.perf_counter() - t
    t = time.perf_counter()
    batch.update(scorer.score_valid(records, texts, batch))
    timers["reward"] += time.perf_counter() - t
    batch = valid_groups(gather_rows(batch, g), g, skipped)
    return batch if len(batch["valid"]) else None

  def rebuild_media(batch, row: int) -> dict:
    """A training row's prompt example that another process sampled."""
    record = train_records[int(batch["index"][row])]
    return rollout.encode_prompt(encoder, record, recipe, config.data.max_prompt_length)

  def evaluate(params) -> dict[str, float]:
    key = jax.random.fold_in(state.rng, _EVAL_KEY)
    batches = [sample(params, p, jax.random.fold_in(key, i), eval_records)
               for i, p in enumerate(eval_batches)]
    batches = [b for b in batches if b is not None]
    return reward_metrics(_concat(batches), scorer.names, g) if batches else {}

  def rounds(params, step, sampled):
    """Rollout rounds with at least one usable prompt; `sampled` gets every round
    drawn (None for a round without one)."""
    for r in range(sh.max_rounds if sh.dynamic_sampling else 1):
      rng = jax.random.fold_in(jax.random.fold_in(state.rng, step), r)
      sampled.append(sample(params, next(prompt_iter), rng, train_records, skipped))
      if sampled[-1] is not None:
        yield sampled[-1]

  # --- Loop --------------------------------------------------------------
  writer = MetricWriter(workdir, enabled=is_main)
  summary = {"task": "grpo", "recipe": recipe}
  if start == 0 and eval_batches:
    summary["eval_start"] = evaluate(state.params)
    writer.write(0, summary["eval_start"], "eval")
  history = []
  progress = tqdm.tqdm(total=config.train.num_steps, initial=start, desc="grpo",
                       disable=not (is_main and config.train.progress_bar), dynamic_ncols=True)
  stopped_early, done = False, start
  with PreemptionGuard() as guard:
    for step in range(start, config.train.num_steps):
      timers.clear()
      t_step = time.perf_counter()
      sampled = []
      skipped_before = sum(skipped.values())
      if sh.dynamic_sampling:
        filled = fill_groups(rounds(state.params, step, sampled), g, ro.prompts_per_step,
                             max_rounds=sh.max_rounds)
        batch, kept = filled.batch, filled.num_groups
      else:
        batch = next(rounds(state.params, step, sampled), None)
        kept = 0 if batch is None else len(batch["valid"]) // g
      drawn = [b for b in sampled if b is not None]
      metrics = reward_metrics(_concat(drawn), scorer.names, g) if drawn else {}
      metrics.update({"groups_kept": kept, "rollout_rounds": len(sampled),
                      "prompts_skipped": sum(skipped.values()) - skipped_before})
      rewards_gk = batch["rewards"].reshape(-1, g) if kept else np.zeros((0, g))
      metrics["loss_batch/zero_variance_groups"] = int(
          np.sum(rewards_gk.max(-1) == rewards_gk.min(-1)))

      t = time.perf_counter()
      updates = []
      if kept:
        batch["adv"] = np.asarray(advantage_fn(batch["rewards"], group_size=g), np.float32)
        batch["loss_mask"] = batch["completion_mask"]
        if sh.mask_truncated:
          batch["loss_mask"] = np.asarray(mask_truncated(batch["loss_mask"], batch["truncated"]))
        batch = rollout.pad_groups(batch, rows)
        # Cut the stored full-width prompts to this batch's bucket.
        width = round_up(int(batch["prompt_mask"].sum(1).max()), config.data.prompt_bucket,
                              config.data.max_prompt_length)
        batch["prompt_ids"] = batch["prompt_ids"][:, -width:]
        batch["prompt_mask"] = batch["prompt_mask"][:, -width:]

        def media_rows(rows_r) -> dict:
          """The prompt media of rows `rows_r` (this process's share of a global
          batch), batched at this width and the global batch's buckets (text: none)."""
          if PROMPT_MEDIA not in batch:
            return {}
          examples = fill_objects(batch[PROMPT_MEDIA], rows_r,
                                  lambda row: rebuild_media(batch, row))
          return prompt_media.collate(examples, width, min_needs=agree_max(media_needs(examples)))

        # Each process feeds its share of every global minibatch; the order
        # and the shares depend on global rows only.
        keys = GRPO_BATCH.required
        if ref_params is not None:
          mine = process_share(np.arange(rows))
          seqs = to_global({k: batch[k][mine] for k in keys[:4]}, mesh, rules)
          # Groups are whole here: each prompt's media encoded once for its G rows.
          ref_media = to_global(media_rows(mine[::g]), mesh, rules)
          batch["ref_logp"] = all_rows(score_completions(
              (graphdef, ref_params), seqs["prompt_ids"], seqs["prompt_mask"],
              seqs["completion_ids"], seqs["completion_mask"], mesh=mesh, rules=rules,
              media=ref_media or None, rows_per_example=g))
          keys += ("ref_logp",)
        for epoch in range(gr.num_iterations):
          order = np.random.default_rng([config.seed, step, epoch]).permutation(rows)
          for rows_m in np.split(order, gr.num_minibatches):
            mine = process_share(rows_m)
            minibatch = {**{k: batch[k][mine] for k in keys}, **media_rows(mine)}
            state, m = grpo_step(state, to_global(minibatch, mesh, rules))
            updates.append(m)
        updates = jax.device_get(updates)
        check_nonfinite(updates[-1], grpo_step.max_nonfinite_streak)
        metrics.update({k: float(np.mean([u[k] for u in updates])) for k in _MEAN_OVER_UPDATES})
        metrics.update({k: float(updates[-1][k]) for k in updates[-1]
                        if k not in _MEAN_OVER_UPDATES and k != "step"})
        metrics["skipped"] = float(sum(u["skipped"] for u in updates))
      timers["train"] += time.perf_counter() - t
      metrics.update({f"time/{k}": v for k, v in timers.items()})
      metrics["time/step"] = time.perf_counter() - t_step
      done = step + 1
      if done % config.train.log_every == 0 or done == config.train.num_steps:
        writer.write(done, metrics)
        history.append({"step": done, **metrics})
        if "reward/total_mean" in metrics:
          progress.set_postfix(reward=f"{metrics['reward/total_mean']:.3f}")
      if eval_batches and config.train.eval_every and done % config.train.eval_every == 0:
        writer.write(done, evaluate(state.params), "eval")
      ckpt.save(done, state, prompt_iter.get_state(), config_json)
      progress.update(1)
      if guard.should_stop():
        ckpt.save(done, state, prompt_iter.get_state(), config_json, force=True)
        log.info("stop requested: saved step %d, exiting", done)
        stopped_early = True
        break
  progress.close()
  final_step = done
  if not stopped_early:
    ckpt.save(final_step, state, prompt_iter.get_state(), config_json, force=True)
  ckpt.wait()
  ckpt.close()

  # --- Final eval and export ---------------------------------------------
  summary.update(step=final_step, stopped_early=stopped_early,
                 bad_records={k: c.summary() for k, c in counters.items()},
                 skipped_prompts=dict(skipped))
  if skipped:
    log.info("training prompts skipped (since start or resume): %s", dict(skipped))
  if not stopped_early:
    if eval_batches:
      summary["eval"] = evaluate(state.params)
      writer.write(final_step, summary["eval"], "eval")
    if config.export.at_end:
      out_dir = os.path.join(workdir, "hf")
      # The media preprocessing trained with travels with the weights.
      save_pretrained(nnx.merge(graphdef, state.params), out_dir, tokenizer_dir=tokenizer_dir,
                      processor_files=spec.processor_files() if spec else None)
      summary["export"] = out_dir
  if rm is not None and rm.media is not None:
    # Prompts (train and eval, since start or resume) the multimodal RM could
    # not score, by reason; completions whose media placeholders it dropped.
    # Each process scored its own rows: the counts are summed over processes.
    summary["model_reward_unscored"] = total_counts(rm.unscored, INVALID_REASONS)
    summary["model_reward_stripped"] = total_counts({"stripped": rm.stripped},
                                                    ["stripped"]).get("stripped", 0)
  writer.close()

  def write_summary():
    with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
      json.dump({**summary, "history": history}, f, indent=2)

  # Every process returns once the export and summary are on disk.
  written_by_one("summary.json", write_summary)
  workdir_lock.release(workdir)
  return summary
