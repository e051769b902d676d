"""Where the RM train step's time goes: host dispatch vs device ops, by kind.

Builds the same model, optimizer and batch as `benchmarks/rm_train_step.py`,
then measures

- dispatch: how long `Step.__call__` takes to return (the host's share of a
  step; the device runs it asynchronously), next to the compiled executable
  called directly (the wrapper's own cost is the difference);
- step: seconds per step, dispatches overlapping as in training;
- device ops: a `jax.profiler` trace of `--trace_steps` steps, every XLA op
  attributed by its HLO metadata to attention scores (ops whose output has
  2B·heads·T·T elements: logits, mask, softmax and their gradients; with
  `--attention blockwise`, every op of its loops over slices), other
  matmuls of the forward and backward pass, other forward/backward ops
  (elementwise, layout copies), and everything outside differentiation (the
  optimizer, the non-finite guard, metrics, buffer copies).

Device times are summed over XLA:CPU's worker threads (thread-microseconds per
step), so they can exceed the step's wall time. Prints one JSON line.

    python benchmarks/rm_step_profile.py --size=tiny
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import pathlib
import re
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

# `python benchmarks/rm_step_profile.py` puts benchmarks/ first on the path, not the
# repository root that the `benchmarks.` import below needs.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from benchmarks.rm_train_step import (CPU_ATTENTIONS, DEFAULTS, SIZES, batch_arrays,
                                     model_config)
from omni_rrm_jax.models.factory import from_config
from omni_rrm_jax.train.optimizer import make_optimizer
from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.step import make_train_step
from omni_rrm_jax.train.task_kind import RM


def _op_metadata(hlo_text: str) -> dict[str, tuple[str, int, int]]:
  """{instruction name: (op_name metadata, output element count, last dimension)}."""
  out = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%?(\S+) = \w+\[([\d,]*)\]\S* .*?op_name=\"([^\"]*)\"",
                       hlo_text, re.M):
    dims = [int(d) for d in m.group(2).split(",") if d]
    out[m.group(1)] = (m.group(3), int(np.prod(dims)) if dims else 1, dims[-1] if dims else 1)
  return out


def device_breakdown(trace_dir: str, hlo_text: str, steps: int, scores_elements: int,
                     length: int, blockwise: bool = False) -> dict[str, dict[str, float]]:
  """Microseconds and op counts per step, by kind, from a trace's XLA op events.

  Attention's score ops are those whose output holds as many elements as the
  scores and ends with the key axis (`length`): the logits' product, the mask,
  the softmax and their gradients (op names carry no einsum subscripts). An MLP
  activation of the same element count (400m: [512, 4096]) ends with its width.
  """
  meta = _op_metadata(hlo_text)
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
  events = json.load(gzip.open(path))["traceEvents"]
  threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
  sums = collections.defaultdict(lambda: [0, 0.0])
  for e in events:
    if e.get("ph") != "X" or "XLAEigen" not in threads.get((e["pid"], e["tid"]), ""):
      continue
    name = e["name"]
    if name.startswith(("ThunkExecutor", "end:", "Slinky")):
      continue
    op_name, elements, last = meta.get(name, ("", 0, 0))
    in_autodiff = "jvp" in op_name or "transpose(" in op_name
    if blockwise and "/while/" in op_name:  # the attention's loops over slices
      kind = "attention_scores"
    elif not in_autodiff:
      kind = "outside_autodiff"  # optimizer, guard, metrics, buffer copies
    elif elements == scores_elements and last == length:
      kind = "attention_scores"
    elif name.startswith(("ynn_fusion", "dot", "onednn")) or "dot_general" in op_name:
      kind = "other_matmuls"
    else:
      kind = "other_fwd_bwd"
    sums[kind][0] += 1
    sums[kind][1] += e.get("dur", 0.0)
  return {k: {"us": round(t / steps), "ops": round(n / steps, 1)} for k, (n, t) in sums.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
  parser.add_argument("--steps", type=int, default=None, help="timed steps (default 30 / 3)")
  parser.add_argument("--trace_steps", type=int, default=None, help="traced steps (10 / 2)")
  parser.add_argument("--attention", default="reference", choices=CPU_ATTENTIONS,
                      help="the text decoder's attention (`model.attention`)")
  args = parser.parse_args()
  cfg = SIZES[args.size]
  pairs, length, _, _ = DEFAULTS[args.size]
  steps = args.steps or (30 if args.size == "tiny" else 3)
  trace_steps = args.trace_steps or (10 if args.size == "tiny" else 2)

  model = from_config("Qwen2ForSequenceClassification", model_config(cfg),
                      attention=args.attention)
  tx, schedule = make_optimizer(dict(learning_rate=1e-5, warmup_steps=0, weight_decay=0.01,
                                     grad_clip_norm=1.0), total_steps=10**6)
  graphdef, state = init_train_state(model, tx, 0)
  n_leaves = len(jax.tree.leaves(state.params))
  del model
  step = make_train_step(graphdef, tx, RM, schedule=schedule)
  ids, mask = batch_arrays(pairs, length, cfg["vocab_size"])
  batch = jax.device_put({"chosen_input_ids": ids[0], "chosen_attention_mask": mask[0],
                          "rejected_input_ids": ids[1], "rejected_attention_mask": mask[1]})
  state, metrics = step(state, batch)
  jax.block_until_ready(state)
  compiled = step.lower(state, batch).compile()
  hlo = compiled.as_text()
  entry = hlo.split("\nENTRY")[1]

  def dispatch_us(fn) -> float:
    nonlocal state
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      state, _ = fn(state, batch)
      times.append(time.perf_counter() - start)
      jax.block_until_ready(state)
    return statistics.median(times) * 1e6

  wrapper_us, executable_us = dispatch_us(step), dispatch_us(compiled)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  step_us = (time.perf_counter() - start) / steps * 1e6

  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    for _ in range(trace_steps):
      state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    jax.profiler.stop_trace()
    scores = 2 * pairs * cfg["num_attention_heads"] * length * length
    ops = device_breakdown(trace_dir, hlo, trace_steps, scores, length,
                           blockwise=args.attention == "blockwise")

  print(json.dumps({
      "benchmark": "rm_step_profile", "size": args.size, "attention": args.attention,
      "param_leaves": n_leaves,
      "step_us": round(step_us), "dispatch_us_step_call": round(wrapper_us),
      "dispatch_us_compiled_executable": round(executable_us),
      "device_thread_us": ops, "device_thread_total_us": sum(v["us"] for v in ops.values()),
      "hlo_entry_instructions": sum(1 for line in entry.splitlines() if " = " in line),
      "hlo_entry_copies": entry.count(" copy("),
      "load_avg": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
  main()
