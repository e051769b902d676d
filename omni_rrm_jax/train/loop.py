"""The training loop of the scalar reward model (`rm`) and the judge SFT (`sft`).

  omni-rrm --config=configs/rm.py:tiny --workdir=DIR     (or configs/sft.py)

Reads top to bottom: mesh, data, model and optimizer, shard, restore, loop
(with periodic eval and checkpoints), final eval, export. Pointed at a workdir
that holds a checkpoint, it resumes from it exactly (train state and input
stream); SIGTERM saves a checkpoint and exits cleanly.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time

import jax
import numpy as np
import tqdm
from flax import nnx

from omni_rrm_jax.assembly.inputs import task_inputs
from omni_rrm_jax.assembly.models import build_model
from omni_rrm_jax.config.validate import check as check_settings
from omni_rrm_jax.core import workdir_lock
from omni_rrm_jax.core.batch_contract import HOST_ONLY
from omni_rrm_jax.core.metric_writers import MetricWriter
from omni_rrm_jax.core.multihost import agree_max, allgather, written_by_one
from omni_rrm_jax.data.pipeline import make_dataset
from omni_rrm_jax.data.tokenize import INVALID_REASONS, ExampleEncoder
from omni_rrm_jax.models.hf_save import save_pretrained
from omni_rrm_jax.sharding.batch import to_global
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.sharding.rules import rules_from_config
from omni_rrm_jax.train.checkpointing import Checkpointer
from omni_rrm_jax.train.optimizer import make_optimizer
from omni_rrm_jax.train.preemption import PreemptionGuard
from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.step import check_nonfinite, make_eval_step, make_train_step
from omni_rrm_jax.train.task_kind import TaskKind, task_kind

log = logging.getLogger(__name__)


class InputCounts:
  """Host-side tallies of what the pipeline marked: truncations and invalid rows."""

  def __init__(self):
    self.examples = 0
    self.truncated = 0
    self.invalid = collections.Counter()

  def add(self, batch) -> None:
    real = batch["index"] >= 0
    self.examples += int(real.sum())
    self.truncated += int(batch["truncated"][real].sum())
    for reason in batch["invalid_reason"][real & ~batch["valid"]]:
      self.invalid[INVALID_REASONS[int(reason)]] += 1

  def as_dict(self) -> dict:
    """The tallies of all processes (collective with several)."""
    local = [self.examples, self.truncated, *(self.invalid[r] for r in INVALID_REASONS)]
    total = allgather(local).sum(axis=0)
    invalid = {r: int(n) for r, n in zip(INVALID_REASONS, total[2:]) if n}
    return {"examples": int(total[0]), "truncated": int(total[1]), "invalid": invalid}


class BatchShapes:
  """The distinct shapes of device batches: each is one compilation of the step,
  so a growing count points at unbucketed inputs."""

  def __init__(self):
    self.seen: list[tuple] = []

  def add(self, batch) -> None:
    shape = tuple(sorted((k, v.shape) for k, v in batch.items() if k not in HOST_ONLY))
    if shape not in self.seen:
      self.seen.append(shape)
      sizes = {k: v for k, v in shape if k.endswith(("input_ids", "vision_patches"))}
      log.info("batch shape #%d: %s", len(self.seen), sizes)


def evaluate(eval_step, state, dataset, kind: TaskKind, mesh, rules) -> dict:
  """Eval-step metrics averaged over one pass of `dataset`, each batch weighted
  by the kind's `eval_weight` (valid pairs, target tokens) of the global batch,
  so every process takes the same decisions."""
  sums, weight_total = collections.defaultdict(float), 0.0
  for batch in dataset:
    metrics = jax.device_get(eval_step(state, to_global(batch, mesh, rules)))
    weight = float(metrics[kind.eval_weight])
    if weight == 0:
      continue
    for name, value in metrics.items():
      if np.ndim(value) == 0:
        sums[name] += float(value) * weight
    weight_total += weight
  return {k: v / weight_total for k, v in sums.items()} if weight_total else {}


def run(config, workdir: str) -> dict:
  """Trains per `config` in `workdir`; returns a summary dict."""
  kind = task_kind(config.task)
  check_settings(config, process_count=jax.process_count(), device_count=jax.device_count())
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  # One run per workdir; a resumed run must be the same run (up to its length,
  # logging and evaluation) unless checkpoint.allow_config_change.
  written_by_one("the workdir lock", lambda: workdir_lock.hold(workdir))
  config_json = config.to_json_best_effort(sort_keys=True)
  ckpt = Checkpointer(workdir, save_every=config.checkpoint.every,
                      keep=config.checkpoint.keep,
                      async_save=config.checkpoint.async_save)
  ckpt.check_config(config_json, allow_change=config.checkpoint.allow_config_change)

  # --- Mesh --------------------------------------------------------------
  mesh = make_mesh(dict(config.mesh))
  rules = rules_from_config(dict(config.rules))
  n_proc = jax.process_count()  # batch sizes divide by it (config/validate.py)

  # --- Data --------------------------------------------------------------
  classifier = kind.classifier
  inputs = task_inputs(model=config.model, data=config.data, media=config.media,
                       tokenizer=config.tokenizer, workdir=workdir, classifier=classifier)
  train_records, eval_records, counters = (inputs.train_records, inputs.eval_records,
                                           inputs.counters)
  tokenizer, tokenizer_dir = inputs.tokenizer, inputs.tokenizer_dir
  # A multimodal model decodes media in the data workers (None: text only).
  media = inputs.media
  encoder = ExampleEncoder(tokenizer, config.data.max_length, kind.batch,
                           margin_scale=config.loss.margin_scale, media=media)
  data_kw = dict(buckets=tuple(config.data.buckets), pad_id=tokenizer.pad_token_id,
                 worker_count=config.data.worker_count, process_index=jax.process_index(),
                 process_count=n_proc, agree=agree_max if n_proc > 1 else None,
                 patch_buckets=tuple(config.media.patch_buckets) if media else ())
  train_ds = make_dataset(train_records, encoder, batch_size=config.data.batch_size // n_proc,
                          seed=config.data.seed,
                          group_by_modality=config.data.group_by_modality, **data_kw)
  eval_ds = (make_dataset(eval_records, encoder, seed=0, shuffle=False, num_epochs=1,
                          batch_size=config.data.eval_batch_size // n_proc, **data_kw)
             if eval_records else None)

  # --- Model and optimizer (parameters born sharded) ---------------------
  model = build_model(config.model, tokenizer, mesh, rules, classifier=classifier,
                      seed=config.seed)
  tx, schedule = make_optimizer(
      {k: v for k, v in config.optim.items() if k != "grad_accum_steps"},
      total_steps=config.train.num_steps)
  graphdef, state = init_train_state(model, tx, config.seed, mesh=mesh, rules=rules)
  del model  # the state holds the only copy of the weights from here on
  train_step = make_train_step(
      graphdef, tx, kind, grad_accum_steps=config.optim.grad_accum_steps,
      max_nonfinite_streak=config.train.max_nonfinite_streak, mesh=mesh, rules=rules,
      schedule=schedule, center_coef=config.loss.center_coef)
  eval_step = make_eval_step(graphdef, kind, mesh=mesh, rules=rules,
                             center_coef=config.loss.center_coef)

  # --- Restore -----------------------------------------------------------
  train_iter = iter(train_ds)
  start = 0
  state, latest = ckpt.resume(state, train_iter)
  if latest is not None:
    start = int(jax.device_get(state.step))
    log.info("resumed from step %d in %s", start, workdir)

  # --- Loop --------------------------------------------------------------
  writer = MetricWriter(workdir, enabled=is_main)
  counts = InputCounts()
  shapes = BatchShapes()
  history = []
  progress = tqdm.tqdm(total=config.train.num_steps, initial=start, desc=f"{kind.name} train",
                       disable=not (is_main and config.train.progress_bar), dynamic_ncols=True)
  postfix: dict[str, str] = {}  # the progress bar's latest loss and held-out numbers
  stopped_early = False
  last_eval: tuple[int, dict] = (-1, {})
  t0 = time.perf_counter()
  with PreemptionGuard() as guard:
    for step in range(start, config.train.num_steps):
      batch = next(train_iter)
      counts.add(batch)
      shapes.add(batch)
      state, metrics = train_step(state, to_global(batch, mesh, rules))
      done = step + 1
      if done % config.train.log_every == 0 or done == config.train.num_steps:
        metrics = jax.device_get(metrics)
        check_nonfinite(metrics, train_step.max_nonfinite_streak)
        metrics["steps_per_second"] = (done - start) / (time.perf_counter() - t0)
        writer.write(done, metrics)
        history.append({"step": done, **{k: float(v) for k, v in metrics.items()
                                         if np.ndim(v) == 0}})
        postfix["loss"] = f"{float(metrics['loss']):.4f}"
        progress.set_postfix(postfix)
      if eval_ds is not None and (done % config.train.eval_every == 0):
        last_eval = (done, evaluate(eval_step, state, eval_ds, kind, mesh, rules))
        writer.write(done, last_eval[1], "eval")
        headline = kind.headline
        if headline in last_eval[1]:
          postfix[f"eval_{headline}"] = f"{last_eval[1][headline]:.3f}"
          progress.set_postfix(postfix)
      ckpt.save(done, state, train_iter.get_state(), config_json)
      progress.update(1)
      if guard.should_stop():
        ckpt.save(done, state, train_iter.get_state(), config_json, force=True)
        log.info("stop requested: saved step %d, exiting", done)
        stopped_early = True
        break
  progress.close()
  final_step = int(jax.device_get(state.step))
  if not stopped_early:
    ckpt.save(final_step, state, train_iter.get_state(), config_json, force=True)
  ckpt.wait()
  ckpt.close()

  # --- Final eval and export ---------------------------------------------
  summary = {"task": kind.name, "step": final_step, "stopped_early": stopped_early,
             "inputs": counts.as_dict(),
             "bad_records": {k: c.summary() for k, c in counters.items()},
             "batch_shapes": len(shapes.seen), "train_compiles": train_step.num_compiles()}
  log.info("input pipeline: %s", json.dumps(summary["inputs"]))
  log.info("%d distinct train batch shapes, %d train step compilations",
           summary["batch_shapes"], summary["train_compiles"])
  if not stopped_early:
    if eval_ds is not None:
      if last_eval[0] == final_step:  # the loop's last step was an eval step
        summary["eval"] = last_eval[1]
      else:
        summary["eval"] = evaluate(eval_step, state, eval_ds, kind, mesh, rules)
        writer.write(final_step, summary["eval"], "eval")
    if config.export.at_end:
      out_dir = os.path.join(workdir, "hf")
      # The media preprocessing trained with travels with the weights.
      save_pretrained(nnx.merge(graphdef, state.params), out_dir, tokenizer_dir=tokenizer_dir,
                      processor_files=media.processor_files() if media else None)
      summary["export"] = out_dir
  writer.close()

  def write_summary():
    with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
      json.dump({**summary, "history": history}, f, indent=2)

  # Every process returns once the export and summary are on disk.
  written_by_one("summary.json", write_summary)
  workdir_lock.release(workdir)
  return summary
