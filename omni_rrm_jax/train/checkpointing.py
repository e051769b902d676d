"""One Orbax checkpoint per save: train state + input iterator state + config.

  ckpt = Checkpointer(workdir, save_every=1000, keep=3)
  step = ckpt.latest_step()
  if step is not None:                       # resuming is the default
    state, data_state, config_json = ckpt.restore(step, abstract_state)
  ...
  ckpt.save(step, state, data_iter.get_state(), config.to_json())
  ckpt.close()

Each step folder `<workdir>/checkpoints/<step>/` holds three items: `state`
(the `TrainState` pytree without its frozen parameters, `StandardSave`), `data`
and `config` (both `JsonSave`). Frozen parameters (a LoRA base, frozen
encoders) are not saved: the config is the pointer to them (`model.path`, or
`model.*` and the seed of a random init), and a resume rebuilds them from it. The iterator state is a Grain `DatasetIterator.get_state()` dict
or a `DataLoader` iterator's bytes, stored with a tag so it comes back as the
same type.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

ITEMS = ("state", "data", "config")

# Settings a resumed run may change without `checkpoint.allow_config_change`:
# how long it runs, what it logs and evaluates, how it saves and exports, and
# the mesh it runs on (a checkpoint restores into any sharding), and how the
# vocabulary head is chunked (memory, not math). Anything else (model, data,
# optimizer, seed, ...) would silently continue another run.
RESUMABLE_CHANGES = ("train.num_steps", "train.log_every", "train.eval_every",
                     "train.progress_bar", "train.max_nonfinite_streak", "checkpoint.",
                     "eval.", "export.", "mesh.", "rules.", "data.eval_limit",
                     "data.eval_batch_size", "data.eval_path", "data.eval_worker_count",
                     "model.logits_chunk")

# Settings added after runs were saved, each with the value that reproduces those
# runs: a checkpoint saved without one resumes under that value as unchanged.
# (One that may change on resume anyway, as data.eval_worker_count, needs no entry.)
ADDED_SETTINGS = {"model.target_logits": 0, "data.response_probe": "",
                  "data.response_probe_weight": 1}


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flat(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def config_changes(saved_json: str, new_json: str) -> list[str]:
  """`key: saved -> new` for each setting that differs and may not change on resume."""
  saved, new = _flat(json.loads(saved_json)), _flat(json.loads(new_json))
  lines = []
  for key in sorted(set(saved) | set(new)):
    if key not in saved and key in ADDED_SETTINGS and new[key] == ADDED_SETTINGS[key]:
      continue
    if saved.get(key) != new.get(key) and not any(
        key == allowed or (allowed.endswith(".") and key.startswith(allowed))
        for allowed in RESUMABLE_CHANGES):
      lines.append(f"{key}: {saved.get(key, '(none)')!r} -> {new.get(key, '(none)')!r}")
  return lines


def _encode_data_state(data: dict | bytes | None) -> dict:
  if data is None:
    return {"kind": "none"}
  if isinstance(data, (bytes, bytearray)):
    return {"kind": "bytes", "base64": base64.b64encode(bytes(data)).decode("ascii")}
  if isinstance(data, dict):
    return {"kind": "dict", "value": data}
  raise TypeError(f"data_iter_state must be a dict, bytes or None, got {type(data).__name__}")


def _decode_data_state(item: dict) -> dict | bytes | None:
  kind = item.get("kind")
  if kind == "none":
    return None
  if kind == "bytes":
    return base64.b64decode(item["base64"])
  if kind == "dict":
    return item["value"]
  raise ValueError(f"unrecognised data iterator state in checkpoint: kind={kind!r}")


def _trained(state: Any) -> Any:
  """What is saved of `state`: a `TrainState` without its frozen parameters."""
  return state.trained() if hasattr(state, "trained") else state


class Checkpointer:
  """Saves and restores train checkpoints under `<workdir>/checkpoints`.

  Args:
    workdir: the run directory (local path or a `gs://` URL).
    save_every: `save` writes only on multiples of this step (unless forced).
    keep: how many most recent checkpoints to keep (None keeps all).
    async_save: write in a background thread; the device arrays are copied
      first, so the (donated) state may be used by the next step at once.
  """

  def __init__(self, workdir: str, *, save_every: int, keep: int | None = 3,
               async_save: bool = True):
    if save_every < 1:
      raise ValueError(f"save_every must be >= 1, got {save_every}")
    if keep is not None and keep < 1:
      raise ValueError(f"keep must be >= 1 or None, got {keep}")
    path = workdir if "://" in workdir else os.path.abspath(workdir)
    self.directory = os.path.join(path, "checkpoints")
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(save_every),
        preservation_policy=ocp.checkpoint_managers.LatestN(keep),
        enable_async_checkpointing=async_save,
        create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  def save(self, step: int, state: Any, data_iter_state: dict | bytes | None,
           config_json: str, force: bool = False) -> bool:
    """Saves if `step` is a multiple of `save_every` (or `force`, e.g. on
    preemption). Must be called by every process.

    Args:
      step: the train step the state is at.
      state: the `TrainState` (sharded arrays are written shard by shard).
      data_iter_state: the input iterator's state (JSON-able dict or bytes).
      config_json: the run's config as a JSON string.
      force: save regardless of `save_every`; never overwrites an existing step.

    Returns:
      Whether a save was started.
    """
    if force and step in self.all_steps():
      return False
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(_trained(state)),
        data=ocp.args.JsonSave(_encode_data_state(data_iter_state)),
        config=ocp.args.JsonSave({"config_json": config_json}),
    )
    return bool(self._manager.save(int(step), args=args, force=force))

  def check_config(self, config_json: str, *, allow_change: bool) -> None:
    """Refuses to resume a run whose saved settings differ from `config_json`
    beyond `RESUMABLE_CHANGES` (unless `allow_change`); a fresh workdir passes."""
    step = self.latest_step()
    if step is None:
      return
    try:
      saved = self._manager.restore(
          int(step), args=ocp.args.Composite(config=ocp.args.JsonRestore())).config["config_json"]
    except Exception as e:  # noqa: BLE001 (an unreadable checkpoint is resume's business)
      log.warning("checkpoint %d: its config is unreadable (%s); not compared", step, e)
      return
    changes = config_changes(saved, config_json)
    if not changes:
      return
    if allow_change:
      log.warning("resuming %s with changed settings: %s", self.directory, "; ".join(changes))
      return
    raise ValueError(
        f"{self.directory} holds step {step} of a run with other settings ("
        + "; ".join(changes) + "); use another --workdir, or resume anyway with "
        "--config.checkpoint.allow_config_change=True")

  def latest_step(self) -> int | None:
    """The newest saved step, or None for a fresh workdir."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, step: int | None, abstract_state: Any
              ) -> tuple[Any, dict | bytes | None, str]:
    """Reads a checkpoint straight into the target shardings.

    Args:
      step: the step to restore, or None for the latest.
      abstract_state: a pytree like the saved state whose leaves are
        `jax.ShapeDtypeStruct`s carrying a `sharding` (see
        `train.state.abstract_train_state`); each array is read directly into
        its shards.

    Returns:
      `(state, data_iter_state, config_json)`.
    """
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no checkpoint under {self.directory}")
    missing = [p for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]
               if getattr(leaf, "sharding", None) is None]
    if missing:
      raise ValueError("abstract_state leaves need a sharding to restore into; missing at "
                       f"{jax.tree_util.keystr(missing[0])}")
    args = ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        config=ocp.args.JsonRestore(),
    )
    out = self._manager.restore(int(step), args=args)
    return out.state, _decode_data_state(out.data), out.config["config_json"]

  def resume(self, state: Any, data_iter: Any) -> tuple[Any, int | None]:
    """Restores the latest checkpoint, if any, into `state`'s shardings.

    `data_iter` (a Grain iterator) is moved to the saved input-stream
    position. A checkpoint that cannot be read (e.g. truncated on disk) is
    skipped with a warning for the newest one before it. Returns the restored
    state (or `state` unchanged) and the checkpoint's step, or None when the
    workdir holds no checkpoint.
    """
    steps = self.all_steps()
    if not steps:
      return state, None
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), _trained(state))
    failures = []
    for step in reversed(steps):
      try:
        restored, data_state, _ = self.restore(step, abstract)
      except Exception as e:  # noqa: BLE001 (a damaged checkpoint: try the one before)
        failures.append(f"step {step}: {type(e).__name__}: {str(e)[:200]}")
        log.warning("checkpoint %d in %s is unreadable (%s); trying an older one", step,
                    self.directory, failures[-1])
        continue
      if data_state is not None:
        data_iter.set_state(data_state)
      if hasattr(state, "frozen"):
        restored = restored.replace(frozen=state.frozen)
      return restored, step
    raise ValueError(f"no readable checkpoint in {self.directory}: " + "; ".join(failures))

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then releases Orbax's threads."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
