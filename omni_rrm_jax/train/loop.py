"""The training loop of the scalar reward model (`rm`) and the judge SFT (`sft`).

  omni-rrm --config=configs/rm.py:tiny --workdir=DIR     (or configs/sft.py)

Reads top to bottom: mesh, data, model and optimizer, restore, loop (with
periodic eval), final eval, export. What every trainer does around its steps
(the workdir lock, checkpoints, the preemption guard, the summary) is
`train/run_scaffold.py`'s. Pointed at a workdir that holds a checkpoint, it
resumes from it exactly (train state and input stream); SIGTERM saves a
checkpoint and exits cleanly.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import time

import jax
import numpy as np

from omni_rrm_jax.assembly.inputs import eval_worker_count, task_inputs
from omni_rrm_jax.assembly.models import build_model
from omni_rrm_jax.config.validate import batch_shards, pack_length
from omni_rrm_jax.core.multihost import agree_max
from omni_rrm_jax.data.packing import PackSpec
from omni_rrm_jax.data.pipeline import make_dataset
from omni_rrm_jax.core.weight_spec import parse_response_probe
from omni_rrm_jax.data.tokenize import ExampleEncoder, parse_target_weights
from omni_rrm_jax.sharding.batch import to_global
from omni_rrm_jax.train.input_tallies import BatchShapes, DataWait, InputCounts, TokenRate
from omni_rrm_jax.train.nonfinite_check import NonfiniteCheck, check_nonfinite
from omni_rrm_jax.train.optimizer import make_optimizer
from omni_rrm_jax.train.run_scaffold import RunScaffold
from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.step import make_eval_step, make_train_step
from omni_rrm_jax.train.task_kind import TaskKind, task_kind
from omni_rrm_jax.train.trainable import prepare_trainable, training_sizes

log = logging.getLogger(__name__)


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


def _pack_specs(config, n_proc: int) -> tuple[PackSpec | None, PackSpec | None]:
  """(train, eval) packing of `data.pack`, or (None, None): packed row counts are
  multiples of this process's batch shards (when its share splits over them)
  and, in training, of the micro-batches."""
  d = config.data
  if not d.pack:
    return None, None
  local_shards = max(1, batch_shards(config.mesh, config.rules, jax.device_count()) // n_proc)

  def spec(share: int, accum: int) -> PackSpec:
    shards = local_shards if share % local_shards == 0 else 1
    return PackSpec(pack_length(d), d.pack_segments, math.lcm(shards, accum))

  return (spec(d.batch_size // n_proc, config.optim.grad_accum_steps),
          spec(d.eval_batch_size // n_proc, 1))


def run(config, workdir: str) -> dict:
  """Trains per `config` in `workdir`; returns a summary dict."""
  kind = task_kind(config.task)
  # Settings, the workdir lock, and no resume of a checkpoint of other settings.
  scaffold = RunScaffold(config, workdir)

  # --- Mesh --------------------------------------------------------------
  mesh, rules = scaffold.mesh, scaffold.rules
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
                           margin_scale=config.loss.margin_scale, media=media,
                           sft_target=config.data.get("target", "judgment"),
                           max_target_tokens=config.model.target_logits,
                           target_weights=parse_target_weights(
                               config.data.get("target_weights", "")),
                           response_probe=parse_response_probe(
                               config.data.get("response_probe", ""),
                               config.data.get("response_probe_weight", 1)))
  train_pack, eval_pack = _pack_specs(config, n_proc)
  data_kw = dict(buckets=tuple(config.data.buckets), pad_id=tokenizer.pad_token_id,
                 worker_count=config.data.worker_count, process_index=jax.process_index(),
                 process_count=n_proc, agree=agree_max if n_proc > 1 else None,
                 patch_buckets=tuple(config.media.patch_buckets) if media else ())
  train_ds = make_dataset(train_records, encoder, batch_size=config.data.batch_size // n_proc,
                          seed=config.data.seed, shuffle_block=config.data.shuffle_block,
                          group_by_modality=config.data.group_by_modality, pack=train_pack,
                          **data_kw)
  eval_ds = (make_dataset(eval_records, encoder, seed=0, shuffle=False, num_epochs=1,
                          batch_size=config.data.eval_batch_size // n_proc, pack=eval_pack,
                          **{**data_kw, "worker_count": eval_worker_count(config.data)})
             if eval_records else None)

  # --- Model and optimizer (parameters born sharded) ---------------------
  model = build_model(config.model, tokenizer, mesh, rules, classifier=classifier,
                      seed=config.seed)
  tx, schedule = make_optimizer(
      {k: v for k, v in config.optim.items() if k != "grad_accum_steps"},
      total_steps=config.train.num_steps)
  # LoRA adapters and `model.freeze`: frozen parameters get no gradient and no optimizer state.
  trainable = prepare_trainable(model, config.lora, config.model.freeze, seed=config.seed)
  graphdef, state = init_train_state(model, tx, config.seed, mesh=mesh, rules=rules,
                                     trainable=trainable,
                                     frozen_dtype=config.model.frozen_dtype or None)
  sizes = training_sizes(state)
  del model  # the state holds the only copy of the weights from here on
  train_step = make_train_step(
      graphdef, tx, kind, grad_accum_steps=config.optim.grad_accum_steps,
      max_nonfinite_streak=config.train.max_nonfinite_streak, mesh=mesh, rules=rules,
      schedule=schedule, center_coef=config.loss.center_coef,
      logits_chunk=config.model.logits_chunk, target_logits=config.model.target_logits)
  eval_step = make_eval_step(graphdef, kind, mesh=mesh, rules=rules,
                             center_coef=config.loss.center_coef,
                             logits_chunk=config.model.logits_chunk,
                             target_logits=config.model.target_logits)

  # --- Restore -----------------------------------------------------------
  train_iter = iter(train_ds)
  state, start = scaffold.restore(state, train_iter)

  # --- Loop --------------------------------------------------------------
  writer = scaffold.writer
  counts = InputCounts()
  shapes = BatchShapes()
  history = []
  postfix: dict[str, str] = {}  # the progress bar's latest loss and held-out numbers
  last_eval: tuple[int, dict] = (-1, {})
  # Every step's non-finite streak, read one step late so the host never waits on it.
  nonfinite = NonfiniteCheck(train_step.max_nonfinite_streak)
  t0 = time.perf_counter()
  # Tokens per second between log lines; every process feeds batches of one shape.
  throughput = TokenRate(jax.process_count())
  data_wait = DataWait()  # the share of each log interval spent waiting for batches
  with scaffold.guarded_steps(start, desc=f"{kind.name} train") as loop:
    for step in range(start, config.train.num_steps):
      batch = data_wait.next(train_iter)
      counts.add(batch)
      shapes.add(batch)
      state, metrics = train_step(state, to_global(batch, mesh, rules))
      nonfinite.push(metrics)
      done = step + 1
      if done % config.train.log_every == 0 or done == config.train.num_steps:
        metrics = jax.device_get(metrics)
        check_nonfinite(metrics, train_step.max_nonfinite_streak)
        metrics["steps_per_second"] = (done - start) / (time.perf_counter() - t0)
        metrics["tokens_per_second"] = throughput.rate(counts.tokens)
        metrics["data_wait_fraction"] = data_wait.fraction()
        writer.write(done, metrics)
        history.append({"step": done, **{k: float(v) for k, v in metrics.items()
                                         if np.ndim(v) == 0}})
        postfix["loss"] = f"{float(metrics['loss']):.4f}"
        postfix["tok/s"] = f"{metrics['tokens_per_second']:.0f}"
        loop.progress.set_postfix(postfix)
      if eval_ds is not None and (done % config.train.eval_every == 0):
        last_eval = (done, evaluate(eval_step, state, eval_ds, kind, mesh, rules))
        writer.write(done, last_eval[1], "eval")
        headline = kind.headline
        if headline in last_eval[1]:
          postfix[f"eval_{headline}"] = f"{last_eval[1][headline]:.3f}"
          loop.progress.set_postfix(postfix)
      if loop.end_step(done, state, train_iter.get_state()):
        break
  nonfinite.flush()
  summary = {"task": kind.name, **scaffold.finish_training(state, train_iter.get_state()),
             "inputs": counts.as_dict(),
             "bad_records": {k: c.summary() for k, c in counters.items()},
             "batch_shapes": len(shapes.seen), "train_compiles": train_step.num_compiles(),
             **sizes}
  train_iter.close()  # stops its worker processes and frees their shared memory
  log.info("input pipeline: %s", json.dumps(summary["inputs"]))
  log.info("%d distinct train batch shapes, %d train step compilations",
           summary["batch_shapes"], summary["train_compiles"])

  # --- Final eval --------------------------------------------------------
  final_step = summary["step"]
  if not scaffold.stopped_early and eval_ds is not None:
    if last_eval[0] == final_step:  # the loop's last step was an eval step
      summary["eval"] = last_eval[1]
    else:
      summary["eval"] = evaluate(eval_step, state, eval_ds, kind, mesh, rules)
      writer.write(final_step, summary["eval"], "eval")

  # --- Export ------------------------------------------------------------
  if not scaffold.stopped_early and config.export.at_end:
    summary["export"] = scaffold.export(
        graphdef, state.model_state(), tokenizer_dir=tokenizer_dir,
        processor_files=media.processor_files() if media else None)
  scaffold.close(summary, history)
  return summary
