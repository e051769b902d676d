"""Settings checked before any work: one line per problem, naming the key.

A task calls `check(config, process_count=..., device_count=...)` first thing, so
a negative length, a batch the devices cannot split or a NaN learning rate stops
the run before data is read or a model is built, instead of training on nothing
(every example invalid) or on NaN parameters.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from omni_rrm_jax.config.sections import LORA_TARGETS, REWARD_AGGREGATIONS, SFT_TARGETS
from omni_rrm_jax.core.attention_impl import ATTENTION_IMPLEMENTATIONS
from omni_rrm_jax.core.weight_spec import parse_response_probe
from omni_rrm_jax.sharding.mesh import MESH_AXES, mesh_shape


class _Problems:
  def __init__(self):
    self.lines: list[str] = []

  def add(self, key: str, value: Any, why: str) -> None:
    self.lines.append(f"{key}={value!r}: {why}")

  def positive(self, section, prefix: str, *names: str) -> None:
    for name in names:
      value = section[name]
      if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        self.add(f"{prefix}.{name}", value, "must be a finite number > 0")

  def non_negative(self, section, prefix: str, *names: str) -> None:
    for name in names:
      value = section[name]
      if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        self.add(f"{prefix}.{name}", value, "must be a finite number >= 0")

  def buckets(self, key: str, buckets: Sequence[int], *, zero_ok: bool,
              cover: int | None = None) -> None:
    values = list(buckets)
    low = 0 if zero_ok else 1
    if not values or any(not isinstance(b, int) or b < low for b in values):
      self.add(key, tuple(values), f"must be integers >= {low}, at least one")
    elif values != sorted(set(values)):
      self.add(key, tuple(values), "must be strictly increasing")
    elif cover is not None and values[-1] < cover:
      self.add(key, tuple(values), f"the largest bucket must hold max_length={cover}")

  def divisible(self, key: str, value: int, by: int, what: str) -> None:
    if isinstance(value, int) and value > 0 and value % by:
      self.add(key, value, f"must be a multiple of the {by} {what}")


def _block_size(p: _Problems, block) -> bool:
  """Whether `data.shuffle_block` is an integer >= 1 (the problem added if not)."""
  if not isinstance(block, int) or isinstance(block, bool) or block < 1:
    p.add("data.shuffle_block", block, "must be an integer >= 1")
    return False
  return True


def _shuffle_block(p: _Problems, d, o, process_count: int) -> None:
  """Blocks of consecutive records stay in one batch only if each process's rows
  (and each accumulation microbatch) hold whole blocks."""
  block = d.shuffle_block
  if not _block_size(p, block) or block == 1:
    return
  if d.group_by_modality:
    p.add("data.shuffle_block", block, "cannot be combined with data.group_by_modality")
  accum = o.grad_accum_steps if isinstance(o.grad_accum_steps, int) else 1
  rows = d.batch_size // max(process_count, 1) // max(accum, 1)
  if isinstance(d.batch_size, int) and rows % block:
    p.add("data.shuffle_block", block, f"must divide the {rows} rows of each process's "
          "(micro-)batch, so that no block is split")


def _prompt_block(p: _Problems, block, prompts_per_step, process_count: int) -> None:
  """GRPO's blocks of consecutive prompts (a pair and its swapped twin) stay in
  one step only if each process's prompts of a step hold whole blocks."""
  if not _block_size(p, block):
    return
  rows = prompts_per_step // max(process_count, 1) if isinstance(prompts_per_step, int) else 0
  if block > 1 and rows and rows % block:
    p.add("data.shuffle_block", block, f"must divide the {rows} prompts of each process's "
          "step (rollout.prompts_per_step), so that no block is split")


def batch_shards(mesh: Any, rules: Any, device_count: int) -> int:
  """How many ways the mesh splits the batch axis (the `batch` rule's mesh axes)."""
  sizes = dict(zip(MESH_AXES, mesh_shape(dict(mesh), device_count)))
  axes = rules.get("batch") if hasattr(rules, "get") else None
  if axes is None:
    return 1
  if isinstance(axes, str):
    axes = [axes]
  return math.prod(sizes[a] for a in axes)


def _batch(p: _Problems, key: str, value: int, *, process_count: int, shards: int) -> None:
  """A global batch: positive, an equal share per process, and (when it has more
  rows than the mesh splits the batch into) an equal share per batch shard."""
  if not isinstance(value, int) or value <= 0:
    p.add(key, value, "must be an integer > 0")
    return
  p.divisible(key, value, process_count, "processes")
  if value >= shards:
    p.divisible(key, value, shards, "batch shards of the mesh (mesh.data x mesh.fsdp)")


def _optim(p: _Problems, o, num_updates: int) -> None:
  """`num_updates`: optimizer updates in the run (the warmup must end before)."""
  p.positive(o, "optim", "learning_rate", "eps")
  p.non_negative(o, "optim", "weight_decay", "warmup_steps", "end_lr_factor")
  if o.grad_clip_norm is not None:
    p.positive(o, "optim", "grad_clip_norm")
  if not (0 <= o.b1 < 1 and 0 <= o.b2 < 1):
    p.add("optim.b1/b2", (o.b1, o.b2), "must be in [0, 1)")
  if isinstance(o.warmup_steps, int) and isinstance(num_updates, int) and num_updates > 0 and (
      o.warmup_steps >= num_updates):
    p.add("optim.warmup_steps", o.warmup_steps,
          f"must be < the run's {num_updates} optimizer updates")
  if not isinstance(o.grad_accum_steps, int) or o.grad_accum_steps < 1:
    p.add("optim.grad_accum_steps", o.grad_accum_steps, "must be an integer >= 1")


# "": the parameter dtype.
FROZEN_DTYPES = ("", "float32", "bfloat16", "float16")


def _trainable(p: _Problems, c) -> None:
  """`lora.*`, `model.freeze`, `model.logits_chunk` and `model.target_logits`: what trains,
  and how its head runs."""
  chunk = c.model.logits_chunk
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
    p.add("model.logits_chunk", chunk,
          "must be an integer >= 0 (positions per vocabulary-head chunk; 0: all at once)")
  keep = c.model.target_logits
  if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
    p.add("model.target_logits", keep,
          "must be an integer >= 0 (target positions a row given to the vocabulary head; "
          "0: all)")
  elif keep and c.data.get("pack", False) is True:
    p.add("model.target_logits", keep,
          "must be 0 with data.pack=True (a packed row holds the targets of several examples)")
  freeze = c.model.freeze
  if not isinstance(freeze, (tuple, list)) or not all(isinstance(f, str) and f for f in freeze):
    p.add("model.freeze", freeze, "must be a tuple of module names, e.g. ('visual', 'audio_tower')")
  if c.model.frozen_dtype not in FROZEN_DTYPES:
    p.add("model.frozen_dtype", c.model.frozen_dtype,
          "must be one of " + ", ".join(repr(d) for d in FROZEN_DTYPES))
  scan = c.model.get("scan_layers", False)
  if not isinstance(scan, bool):
    p.add("model.scan_layers", scan, "must be True or False")
  elif scan and isinstance(freeze, (tuple, list)):
    one_layer = [f for f in freeze if isinstance(f, str) and f.split(".")[-1].isdigit()]
    if one_layer:
      p.add("model.freeze", tuple(freeze), "freezes single layers, which model.scan_layers=True "
            "holds stacked as one module; freeze them all or set model.scan_layers=False")
  lo = c.lora
  if not isinstance(lo.rank, int) or lo.rank < 0:
    p.add("lora.rank", lo.rank, "must be an integer >= 0 (0: LoRA off)")
    return
  if lo.rank == 0:
    return
  p.positive(lo, "lora", "alpha")
  if not isinstance(lo.dropout, (int, float)) or not 0 <= lo.dropout < 1:
    p.add("lora.dropout", lo.dropout, "must be in [0, 1)")
  targets = tuple(lo.targets) if isinstance(lo.targets, (tuple, list)) else ()
  unknown = [t for t in targets if t not in LORA_TARGETS]
  if not targets or unknown:
    p.add("lora.targets", lo.targets, "must name linear layers of the text decoder; known: "
          + ", ".join(LORA_TARGETS))


def _loop(p: _Problems, c) -> None:
  p.positive(c.train, "train", "num_steps", "log_every", "max_nonfinite_streak")
  p.non_negative(c.train, "train", "eval_every")
  p.positive(c.checkpoint, "checkpoint", "every", "keep")


def pack_length(data) -> int:
  """Tokens per packed row: `data.pack_length`, or the largest of `data.buckets` when 0."""
  return data.pack_length or max(data.buckets)


def _response_probe(p, d) -> None:
  """`data.response_probe*`: two words and a weight, on unpacked judgment targets."""
  spec = d.get("response_probe", "")
  if not spec:
    return
  try:
    parse_response_probe(spec, d.get("response_probe_weight", 1))
  except ValueError as e:
    p.lines.append(str(e))
  if d.get("target", "judgment") != "judgment":
    p.add("data.response_probe", spec, "needs data.target=judgment (it probes the judge "
          "prompt's two responses)")
  if d.get("pack", False) is True:
    p.add("data.response_probe", spec, "cannot be combined with data.pack=True")


def _packing(p: _Problems, c) -> None:
  """`data.pack*`: rows packed with several examples (text and multimodal models)."""
  d = c.data
  if not isinstance(d.pack, bool):
    p.add("data.pack", d.pack, "must be True or False")
  if not isinstance(d.pack_segments, int) or d.pack_segments < 1:
    p.add("data.pack_segments", d.pack_segments, "must be an integer >= 1")
  if not isinstance(d.pack_length, int) or d.pack_length < 0:
    p.add("data.pack_length", d.pack_length, "must be an integer >= 0 (0: the largest bucket)")
    return
  if not d.pack:
    return
  if isinstance(d.max_length, int) and d.buckets and pack_length(d) < d.max_length:
    p.add("data.pack_length", d.pack_length,
          f"packed rows must hold an example of max_length={d.max_length}")


def _media(p: _Problems, m) -> None:
  p.buckets("media.patch_buckets", m.patch_buckets, zero_ok=True)
  p.buckets("media.audio_frame_buckets", m.audio_frame_buckets, zero_ok=True)


def problems(config, *, process_count: int, device_count: int) -> list[str]:
  """Every problem of `config` (a task config of config/tasks.py), one line each.

  The checks follow the sections and fragments the config has (config/tasks.py
  composes them per task), not the task's name.
  """
  p = _Problems()
  shards = batch_shards(config.mesh, config.rules, device_count) if "mesh" in config else 1
  batched = "data" in config and "max_length" in config.data  # rows padded to buckets
  trains = "train" in config and "optim" in config
  if "model" in config and "attention" in config.model:
    if config.model.attention not in ATTENTION_IMPLEMENTATIONS:
      p.add("model.attention", config.model.attention,
            f"must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}")
  if batched:
    d = config.data
    p.positive(d, "data", "max_length")
    p.buckets("data.buckets", d.buckets, zero_ok=False,
              cover=d.max_length if isinstance(d.max_length, int) else None)
    _batch(p, "data.batch_size", d.batch_size, process_count=process_count, shards=shards)
    _media(p, config.media)
  if "data" in config and "eval_worker_count" in config.data:
    p.non_negative(config.data, "data", "worker_count")
    if not isinstance(config.data.eval_worker_count, int) or config.data.eval_worker_count < -1:
      p.add("data.eval_worker_count", config.data.eval_worker_count,
            "must be an integer >= -1 (-1: as data.worker_count)")
  if batched and trains:  # RM / SFT
    _batch(p, "data.eval_batch_size", config.data.eval_batch_size,
           process_count=process_count, shards=shards)
    o = config.optim
    if isinstance(o.grad_accum_steps, int) and o.grad_accum_steps > 1:
      share = config.data.batch_size // max(process_count, 1)
      p.divisible("data.batch_size", share, o.grad_accum_steps,
                  "micro-batches per step (optim.grad_accum_steps) of each process's share")
    _optim(p, o, config.train.num_steps)
    _loop(p, config)
    _trainable(p, config)
    if "pack" in config.data:
      _packing(p, config)
    if "shuffle_block" in config.data:
      _shuffle_block(p, config.data, config.optim, process_count)
    if "target" in config.data and config.data.target not in SFT_TARGETS:
      p.add("data.target", config.data.target, f"must be one of {', '.join(SFT_TARGETS)}")
    _response_probe(p, config.data)
  if "rollout" in config:  # GRPO
    d, ro = config.data, config.rollout
    p.positive(d, "data", "max_prompt_length", "prompt_bucket")
    p.positive(ro, "rollout", "num_generations", "max_new_tokens", "temperature")
    _batch(p, "rollout.prompts_per_step", ro.prompts_per_step, process_count=process_count,
           shards=1)
    _prompt_block(p, d.shuffle_block, ro.prompts_per_step, process_count)
    if not 0 < ro.top_p <= 1:
      p.add("rollout.top_p", ro.top_p, "must be in (0, 1]")
    p.non_negative(ro, "rollout", "top_k")
    p.non_negative(config.shaping, "shaping", "min_reward_spread")
    p.positive(config.grpo, "grpo", "num_iterations", "num_minibatches")
    if config.grpo.reward_aggregation not in REWARD_AGGREGATIONS:
      p.add("grpo.reward_aggregation", config.grpo.reward_aggregation,
            f"must be one of {', '.join(REWARD_AGGREGATIONS)}")
    _media(p, config.media)
    gr = config.grpo
    accum = config.optim.grad_accum_steps
    rows = ro.prompts_per_step * ro.num_generations
    parts = gr.num_minibatches * max(process_count, 1)
    if (isinstance(accum, int) and accum > 1 and isinstance(rows, int)
        and isinstance(parts, int) and parts > 0 and rows % parts == 0
        and (rows // parts) % accum):
      p.add("optim.grad_accum_steps", accum,
            f"must divide each process's {rows // parts} rows of a minibatch "
            "(rollout.prompts_per_step x rollout.num_generations / grpo.num_minibatches "
            "/ processes)")
    updates = config.train.num_steps * gr.num_iterations * gr.num_minibatches
    _optim(p, config.optim, updates if isinstance(updates, int) else 0)
    _loop(p, config)
    _trainable(p, config)
  if "report" in config:  # evaluation reports
    p.non_negative(config.report, "report", "tie_margin")
    samples = config.report.ci_samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
      p.add("report.ci_samples", samples, "must be an integer >= 0 (0: no intervals)")
  if "serve" in config:
    _serve(p, config.serve, shards=shards)
    _media(p, config.media)
    p.positive(config.judge, "judge", "max_new_tokens")
  if "reward" in config:
    p.positive(config.reward, "reward", "remote_timeout_s")
    if config.reward.remote_url and not config.reward.remote_url.startswith(("http://",
                                                                              "https://")):
      p.add("reward.remote_url", config.reward.remote_url, "must start with http:// or https://")
  return p.lines


def _serve(p: _Problems, sv, *, shards: int) -> None:
  p.positive(sv, "serve", "max_batch_rows", "max_batch_tokens", "max_length", "bucket",
             "max_request_bytes", "max_items", "request_timeout_s")
  p.non_negative(sv, "serve", "max_wait_ms")
  if not isinstance(sv.port, int) or not 0 <= sv.port <= 65535:
    p.add("serve.port", sv.port, "must be an integer in [0, 65535]")
  if isinstance(sv.max_batch_rows, int) and sv.max_batch_rows >= shards:
    p.divisible("serve.max_batch_rows", sv.max_batch_rows, shards,
                "batch shards of the mesh (mesh.data x mesh.fsdp)")


def check(config, *, process_count: int, device_count: int) -> None:
  """Raises ValueError listing every problem of `config` (one line each)."""
  lines = problems(config, process_count=process_count, device_count=device_count)
  if len(lines) == 1:
    raise ValueError(f"bad setting: {lines[0]}")
  if lines:
    raise ValueError("bad settings:\n  " + "\n  ".join(lines))
