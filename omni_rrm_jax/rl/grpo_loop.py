"""The GRPO loop (task `grpo`): rollouts, host rewards, group advantages, policy updates.

  omni-rrm --config=configs/grpo.py:tiny --workdir=DIR

Reads top to bottom: mesh, data (prompt stream, rewards), policy, reference and
optimizer, restore, loop, final eval, export; what every trainer does around its
steps (the workdir lock, checkpoints, the preemption guard, the summary) is
`train/run_scaffold.py`'s. One step:

  rollout   (`rl/rollout_step.py`) draw prompts, sample G completions each with
            the current params, decode, score on the host (`rewards.REWARDS` by
            name, weighted, plus an optional scalar RM), overlong penalty; with
            dynamic sampling drop groups whose rewards are all equal and draw
            more prompts, up to `shaping.max_rounds` rounds;
  batch     (`rl/update_batch.py`) group advantages, the loss mask, padding to
            the step's fixed rows, the prompt width cut to its bucket, and for
            beta > 0 the frozen initial params' log-probs;
  update    (`rl/policy_update.py`) `grpo.num_iterations` passes of
            `grpo.num_minibatches` updates through `rl/grpo_step.py`, with the
            sampler's log-probs as the old policy.

A multimodal policy (Qwen2.5-VL, the Qwen2.5-Omni thinker) samples image,
video and audio records with their media: prompts are encoded with the
training tasks' `MediaSpec`, the sampler runs the encoders once per prompt,
and the update re-encodes each row's prompt media. Records whose media fail
(missing or corrupt files, too many patches, audio for a vision model) are
skipped and counted per reason (`prompts_skipped`, `skipped_prompts`). A text
policy leaves media records out. A multimodal scalar RM (`reward.model_path`)
scores each completion with its prompt's media (`rl/model_reward.py`); prompts
whose media it cannot use score its minimum and are counted
(`model_reward_unscored`). A served RM (`reward.remote_url`, `omni-rrm serve`)
scores them over HTTP instead (`rewards/remote_reward.py`), each process posting
its own rows; a failed or timed-out call scores 0 and is counted
(`remote_reward_failed`).

On several processes (one per host) each samples, decodes and scores its rows
of every global prompt batch; the rows are then gathered to every process
(`rl/multihost_rows.py`), so dynamic sampling, advantages and metrics are
decided on the global batch, and each process feeds its share of every global
minibatch to the update. A run matches the one-process run on the same mesh
(the same prompts, completions and decisions; parameters up to float
rounding in the collectives); process 0 writes the files.

Pointed at a workdir with a checkpoint, it resumes exactly (policy, optimizer,
prompt stream; rollout keys are `fold_in(rng, step)`, each prompt drawing from its
record's index folded into it); SIGTERM saves and exits.
"""

from __future__ import annotations

import functools
import logging
import time

import jax
import jax.numpy as jnp
from flax import nnx

from omni_rrm_jax.assembly.inputs import eval_worker_count, task_inputs
from omni_rrm_jax.assembly.models import build_model
from omni_rrm_jax.core.batch_contract import SFT_BATCH
from omni_rrm_jax.models.lora import without_adapters
from omni_rrm_jax.data.tokenize import INVALID_REASONS, ExampleEncoder
from omni_rrm_jax.rl import rollout
from omni_rrm_jax.rl.advantages import ADVANTAGE_ESTIMATORS
from omni_rrm_jax.rl.grpo_step import make_grpo_step
from omni_rrm_jax.rl.model_reward import ModelReward
from omni_rrm_jax.rewards.remote_reward import FAILURE_REASONS, RemoteReward
from omni_rrm_jax.core.api_key import read_api_key
from omni_rrm_jax.rl.multihost_rows import total_counts
from omni_rrm_jax.rl.policy_update import update_policy
from omni_rrm_jax.rl.prompt_media import PromptMedia
from omni_rrm_jax.rl.rollout_step import Rollouts, changes_since
from omni_rrm_jax.rl.update_batch import UpdateBatchBuilder
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.train.optimizer import make_optimizer
from omni_rrm_jax.train.run_scaffold import RunScaffold
from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.trainable import prepare_trainable, training_sizes

log = logging.getLogger(__name__)

_EVAL_KEY = 2**31 - 1  # folded into the rng for evaluation rollouts, apart from train steps


def _text_records(records, name: str):
  """A text policy cannot see media: records with media are left out (and counted)."""
  kept = [r for r in records if r.modality == "text"]
  if len(kept) < len(records):
    log.warning("%s: %d records with media skipped (the policy is a text model)", name,
                len(records) - len(kept))
  return kept


def _check_grpo_settings(config) -> None:
  if config.data.recipe not in rollout.RECIPES:
    raise ValueError(f"unknown data.recipe {config.data.recipe!r}; "
                     f"known: {', '.join(rollout.RECIPES)}")


def kl_reference(graphdef, state, ref_params):
  """`(graphdef, parameters)` of the KL reference.

  With `ref_params` (the initial trained parameters, copied at start) it is
  the initial policy. Without (LoRA), it is the policy's own parameters with
  the adapters switched off: the frozen base, shared, not copied.
  """
  if ref_params is None:
    return graphdef, without_adapters(state.model_state())
  return graphdef, nnx.merge_state(ref_params, state.frozen)


def run(config, workdir: str) -> dict:
  """GRPO per `config` in `workdir`; returns a summary dict."""
  _check_grpo_settings(config)
  # Settings, the workdir lock, and no resume of a checkpoint of other settings.
  scaffold = RunScaffold(config, workdir)
  ro, sh, gr = config.rollout, config.shaping, config.grpo
  recipe, g = config.data.recipe, ro.num_generations

  # --- Mesh --------------------------------------------------------------
  mesh, rules = scaffold.mesh, scaffold.rules
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
                                          shuffle_block=config.data.shuffle_block, **prompt_kw)
  n_eval = min(config.eval.num_prompts, len(eval_records)) // ro.prompts_per_step
  eval_batches = (list(rollout.make_prompt_dataset(
      eval_records[:n_eval * ro.prompts_per_step], encoder, seed=0, shuffle=False,
      num_epochs=1, **{**prompt_kw, "worker_count": eval_worker_count(config.data)}))
      if n_eval else [])
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
  remote = None
  if config.reward.remote_url:
    # Each process posts its own rows (as the model reward scores its own rows).
    remote = RemoteReward(config.reward.remote_url, timeout_s=config.reward.remote_timeout_s,
                          api_key=read_api_key(config.reward.remote_api_key_file))
    extra["remote_reward"] = (remote, config.reward.remote_weight)
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
  # LoRA adapters and `model.freeze`: frozen parameters get no gradient and no optimizer state.
  trainable = prepare_trainable(model, config.lora, config.model.freeze, seed=config.seed)
  use_lora = config.lora.rank > 0
  graphdef, state = init_train_state(model, tx, config.seed, mesh=mesh, rules=rules,
                                     trainable=trainable,
                                     frozen_dtype=config.model.frozen_dtype or None)
  sizes = training_sizes(state)
  del model  # the state holds the only copy of the weights from here on
  # The reference is the initial policy, rebuilt identically on resume. With
  # LoRA it is the policy's own base, the adapters switched off (`reference`):
  # no second copy of the weights.
  ref_params = (jax.tree.map(jnp.copy, state.params)
                if gr.beta > 0 and not use_lora else None)
  grpo_step = make_grpo_step(
      graphdef, tx, loss_type=gr.loss_type, epsilon_low=gr.epsilon_low,
      epsilon_high=gr.epsilon_high, delta=gr.delta or None, beta=gr.beta,
      kl_estimator=gr.kl_estimator, max_completion_length=ro.max_new_tokens,
      on_policy=updates_per_step == 1, max_nonfinite_streak=config.train.max_nonfinite_streak,
      mesh=mesh, rules=rules, schedule=schedule, grad_accum_steps=config.optim.grad_accum_steps,
      logits_chunk=config.model.logits_chunk)
  rollouts = Rollouts(graphdef, tokenizer=tokenizer, scorer=scorer, group_size=g,
                      gen_kw=gen_kw)
  prepare_update = UpdateBatchBuilder(
      advantage_fn=ADVANTAGE_ESTIMATORS.get(gr.advantage), group_size=g, rows=rows,
      mask_truncated=sh.mask_truncated, prompt_bucket=config.data.prompt_bucket,
      max_prompt_length=config.data.max_prompt_length, prompt_media=prompt_media,
      records=train_records, encoder=encoder, recipe=recipe,
      reward_weights=({name: weight for name, (_, weight) in scorer.reward.terms.items()}
                      if gr.reward_aggregation == "per_reward" else None))

  # --- Restore -----------------------------------------------------------
  prompt_iter = iter(prompt_ds)
  state, start = scaffold.restore(state, prompt_iter)  # numbered by GRPO steps
  # Evaluation rollouts draw from keys of their own (`state.rng` never changes).
  evaluate = functools.partial(rollouts.evaluate, key=jax.random.fold_in(state.rng, _EVAL_KEY),
                               prompt_batches=eval_batches, records=eval_records)

  # --- Loop --------------------------------------------------------------
  writer = scaffold.writer
  summary = {"task": "grpo", "recipe": recipe, **sizes}
  if start == 0 and eval_batches:
    summary["eval_start"] = evaluate(state.model_state())
    writer.write(0, summary["eval_start"], "eval")
  history = []
  timers = rollouts.timers
  with scaffold.guarded_steps(start, desc="grpo") as loop:
    for step in range(start, config.train.num_steps):
      timers.clear()
      t_step = time.perf_counter()
      # Rollout: sample, score, keep groups (and refill) on the global batch.
      drawn = rollouts.step(state.model_state(), jax.random.fold_in(state.rng, step), prompt_iter,
                            train_records, prompts_per_step=ro.prompts_per_step,
                            dynamic_sampling=sh.dynamic_sampling, max_rounds=sh.max_rounds,
                            min_spread=sh.min_reward_spread)
      metrics = drawn.metrics
      # Update: advantages and padding, the reference, then the minibatch passes.
      t = time.perf_counter()
      if drawn.num_groups:
        batch = prepare_update(drawn.batch)
        if gr.beta > 0:
          batch.add_ref_logp(kl_reference(graphdef, state, ref_params), mesh=mesh, rules=rules,
                             logits_chunk=config.model.logits_chunk)
        state, update_metrics = update_policy(
            state, grpo_step, batch, num_iterations=gr.num_iterations,
            num_minibatches=gr.num_minibatches, seed=config.seed, step=step, mesh=mesh,
            rules=rules)
        metrics.update(update_metrics)
      timers["train"] += time.perf_counter() - t
      metrics.update({f"time/{k}": v for k, v in timers.items()})
      metrics["time/step"] = time.perf_counter() - t_step
      if "num_completions" in metrics:  # sampled (completion) tokens per second of the step
        metrics["time/sampled_tokens_per_second"] = (
            metrics["completion_length"] * metrics["num_completions"] / metrics["time/step"])
      done = step + 1
      if done % config.train.log_every == 0 or done == config.train.num_steps:
        writer.write(done, metrics)
        history.append({"step": done, **metrics})
        if "reward/total_mean" in metrics:
          loop.progress.set_postfix({
              "reward": f"{metrics['reward/total_mean']:.3f}",
              "tok/s": f"{metrics['time/sampled_tokens_per_second']:.0f}"})
      if eval_batches and config.train.eval_every and done % config.train.eval_every == 0:
        writer.write(done, changes_since(evaluate(state.model_state()), summary.get("eval_start")),
                     "eval")
      if loop.end_step(done, state, prompt_iter.get_state()):
        break
  skipped = rollouts.skipped
  summary.update(**scaffold.finish_training(state, prompt_iter.get_state()),
                 bad_records={k: c.summary() for k, c in counters.items()},
                 skipped_prompts=dict(skipped))
  prompt_iter.close()  # stops its worker processes and frees their shared memory
  if skipped:
    log.info("training prompts skipped (since start or resume): %s", dict(skipped))

  # --- Final eval --------------------------------------------------------
  if not scaffold.stopped_early and eval_batches:
    summary["eval"] = changes_since(evaluate(state.model_state()), summary.get("eval_start"))
    writer.write(summary["step"], summary["eval"], "eval")

  # --- Export ------------------------------------------------------------
  if not scaffold.stopped_early and config.export.at_end:
    summary["export"] = scaffold.export(
        graphdef, state.model_state(), tokenizer_dir=tokenizer_dir,
        processor_files=spec.processor_files() if spec else None)
  if rm is not None and rm.media is not None:
    # Prompts (train and eval, since start or resume) the multimodal RM could
    # not score, by reason; completions whose media placeholders it dropped.
    # Each process scored its own rows: the counts are summed over processes.
    summary["model_reward_unscored"] = total_counts(rm.unscored, INVALID_REASONS)
    summary["model_reward_stripped"] = total_counts({"stripped": rm.stripped},
                                                    ["stripped"]).get("stripped", 0)
  if remote is not None:
    # Completions whose server call failed (scored 0), by reason, over processes.
    summary["remote_reward_failed"] = total_counts(remote.failed, FAILURE_REASONS)
    remote.close()
  scaffold.close(summary, history)
  return summary
