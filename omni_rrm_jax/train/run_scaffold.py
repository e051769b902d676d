"""What every trainer does around its steps, written once: open, restore, guarded loop, finish.

  run = RunScaffold(config, workdir)   # settings, workdir lock, mesh, rules, checkpoints
  state, start = run.restore(state, data_iter)
  with run.guarded_steps(start, desc="rm train"):
    for step in range(start, config.train.num_steps):
      state, metrics = train_step(state, next(data_iter))
      if run.end_step(step + 1, state, data_iter.get_state()):
        break                          # a stop was requested: saved, leave the loop
  summary = {"task": ..., **run.finish_training(state, data_iter.get_state())}
  if not run.stopped_early:            # final eval, export
    summary["export"] = run.export(graphdef, state.model_state(), tokenizer_dir=...)
  run.close(summary, history)          # summary.json by one process, lock released

The RM/SFT loop (`train/loop.py`) and the GRPO loop (`rl/grpo_loop.py`) differ in
what a step is; everything here is the same for both: one run per workdir, a
resumed run must be the same run (`Checkpointer.check_config`), checkpoints every
`checkpoint.every` steps numbered by loop steps, SIGTERM saves and stops at a step
boundary on every process at once (`PreemptionGuard`), a final forced save, the
export to `WORKDIR/hf`, and `summary.json` written by process 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any, Iterator

import jax
import tqdm
from flax import nnx

from omni_rrm_jax.config.validate import check as check_settings
from omni_rrm_jax.core import workdir_lock
from omni_rrm_jax.core.metric_writers import MetricWriter
from omni_rrm_jax.core.multihost import is_writer, written_by_one
from omni_rrm_jax.models.hf_save import save_pretrained
from omni_rrm_jax.models.lora import adapted_layers
from omni_rrm_jax.models.peft_save import save_peft_adapter
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.sharding.rules import rules_from_config
from omni_rrm_jax.train.checkpointing import Checkpointer
from omni_rrm_jax.train.preemption import PreemptionGuard

log = logging.getLogger(__name__)


class RunScaffold:
  """One training run in `workdir`, opened on construction.

  Opening checks the settings, takes the workdir lock, refuses to resume a
  checkpoint of other settings (before any work), and builds the mesh, the
  logical-axis rules and the metric writer.

  Args:
    config: the task's config (reads `train`, `checkpoint`, `mesh`, `rules`).
    workdir: the run directory.

  Attributes:
    mesh, rules: the device mesh and logical-axis rules from the config.
    writer: the run's `MetricWriter` (enabled on process 0).
    is_main: whether this process writes shared files.
    step: the loop step the state is at (after `restore` and each `end_step`).
    stopped_early: whether a stop request ended the loop.
    progress: the progress bar, inside `guarded_steps`.
  """

  def __init__(self, config, workdir: str):
    check_settings(config, process_count=jax.process_count(), device_count=jax.device_count())
    os.makedirs(workdir, exist_ok=True)
    self.config, self.workdir = config, workdir
    self.is_main = is_writer()
    # One run per workdir; a resumed run must be the same run (up to its length,
    # logging and evaluation) unless checkpoint.allow_config_change.
    written_by_one("the workdir lock", lambda: workdir_lock.hold(workdir))
    self.config_json = config.to_json_best_effort(sort_keys=True)
    self.ckpt = Checkpointer(workdir, save_every=config.checkpoint.every,
                             keep=config.checkpoint.keep,
                             async_save=config.checkpoint.async_save)
    self.ckpt.check_config(self.config_json,
                           allow_change=config.checkpoint.allow_config_change)
    self.mesh = make_mesh(dict(config.mesh))
    self.rules = rules_from_config(dict(config.rules))
    self.writer = MetricWriter(workdir, enabled=self.is_main)
    self.step = 0
    self.stopped_early = False
    self.progress: tqdm.tqdm | None = None
    self._guard: PreemptionGuard | None = None

  def restore(self, state: Any, data_iter: Any) -> tuple[Any, int]:
    """The latest checkpoint's state (in `state`'s shardings) and its step, or
    `(state, 0)` in a fresh workdir; `data_iter` moves to the saved position.

    Checkpoints are numbered by loop steps (a GRPO step holds several updates).
    """
    state, latest = self.ckpt.resume(state, data_iter)
    if latest is not None:
      self.step = latest
      log.info("resumed from step %d in %s", latest, self.workdir)
    return state, self.step

  @contextlib.contextmanager
  def guarded_steps(self, start: int, *, desc: str) -> Iterator[RunScaffold]:
    """The loop's context: a progress bar from `start` and the preemption guard
    (SIGTERM / SIGINT become a stop request that `end_step` acts on)."""
    train = self.config.train
    self.progress = tqdm.tqdm(total=train.num_steps, initial=start, desc=desc,
                              disable=not (self.is_main and train.progress_bar),
                              dynamic_ncols=True)
    try:
      with PreemptionGuard() as self._guard:
        yield self
    finally:
      self._guard = None
      self.progress.close()

  def end_step(self, done: int, state: Any, data_state: Any) -> bool:
    """Closes loop step `done` (1-based): the periodic checkpoint, the progress
    bar, and a stop request from any process. Collective: every process calls
    it at every step.

    Returns:
      True when a stop was requested: the state is saved and the loop must end.
    """
    self.step = done
    self.ckpt.save(done, state, data_state, self.config_json)
    self.progress.update(1)
    if self._guard.should_stop():
      self.ckpt.save(done, state, data_state, self.config_json, force=True)
      log.info("stop requested: saved step %d, exiting", done)
      self.stopped_early = True
      return True
    return False

  def finish_training(self, state: Any, data_state: Any) -> dict[str, Any]:
    """The final checkpoint (unless the stop already saved it), then waits for
    every write and closes the checkpointer.

    Returns:
      The run's outcome for its summary: `step`, `stopped_early` and
      `nonfinite_skipped`, the updates skipped for a non-finite loss or
      gradient norm over the whole run (resumes included; an RM/SFT step is one
      update, a GRPO step `num_iterations * num_minibatches`).
    """
    if not self.stopped_early:
      self.ckpt.save(self.step, state, data_state, self.config_json, force=True)
    self.ckpt.wait()
    self.ckpt.close()
    skipped = int(jax.device_get(state.nonfinite_total))
    if skipped:
      log.warning("%d updates were skipped for a non-finite loss or gradient norm", skipped)
    return {"step": self.step, "stopped_early": self.stopped_early,
            "nonfinite_skipped": skipped}

  def export(self, graphdef, params, *, tokenizer_dir: str | None,
             processor_files: dict | None) -> str:
    """Writes the trained model as a Hugging Face folder, `WORKDIR/hf`; returns it.

    `params`: every parameter (`TrainState.model_state()`). A LoRA model is
    written merged there, and its adapters as a PEFT folder,
    `WORKDIR/hf_adapter`, for the base `model.path`.
    `processor_files`: the media preprocessing trained with, which travels
    with the weights (None for a text model).
    """
    out_dir = os.path.join(self.workdir, "hf")
    model = nnx.merge(graphdef, params)
    save_pretrained(model, out_dir, tokenizer_dir=tokenizer_dir,
                    processor_files=processor_files)
    if adapted_layers(model):
      save_peft_adapter(model, os.path.join(self.workdir, "hf_adapter"),
                        base_model_path=self.config.model.path)
    return out_dir

  def close(self, summary: dict, history: list[dict]) -> None:
    """Closes the metric writer, writes `summary.json` (with `history`) from one
    process and releases the workdir lock. Every process returns once the
    export and the summary are on disk."""
    self.writer.close()

    def write_summary():
      with open(os.path.join(self.workdir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump({**summary, "history": history}, f, indent=2)

    written_by_one("summary.json", write_summary)
    workdir_lock.release(self.workdir)
