"""Where the main job's RM / judge SFT train step spends its time, on the job's own batches.

Builds the main job's data and tokenizer (`omni-rrm demo`'s first two stages,
in `--workdir` or a temporary folder), its model, optimizer and train step for
`--stage` (`rm` or `sft`, `demo/config.py`), and `--batches` batches of the
job's real rows (media decoded in this process). Then

- step: seconds per step over the batches, dispatches overlapping as in
  training (median of `--rounds` passes), and the page faults a step takes
  (`OMNI_RRM_HUGE_PAGES=0` for 4 KiB pages: README, "Host memory on huge pages");
- device ops: a `jax.profiler` trace of one pass, every XLA:CPU op summed by
  kind (`ynn_fusion`: XNNPACK matrix products and the reductions fused into
  them; `dot`: the other matrix products; `copy_*` / `transpose_*` fusions:
  layout copies; the rest elementwise), and the slowest ops with their shape
  and the JAX operation they come from (HLO metadata).

Device times are summed over XLA:CPU's worker threads (thread-milliseconds per
step), so they can exceed the wall time. Prints one JSON line.

    python benchmarks/demo_step_profile.py --stage sft     # ~1-2 min on 2 cores
    python benchmarks/demo_step_profile.py --stage rm --top 20
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import resource
import statistics
import tempfile
import time

import jax
import numpy as np

from omni_rrm_jax.assembly.inputs import task_inputs
from omni_rrm_jax.assembly.models import build_model
from omni_rrm_jax.core.huge_pages import huge_pages_asked
from omni_rrm_jax.data.pipeline import make_dataset
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.demo import run as demo
from omni_rrm_jax.demo.config import get_config
from omni_rrm_jax.sharding.batch import to_global
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.sharding.rules import rules_from_config
from omni_rrm_jax.train.optimizer import make_optimizer
from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.step import make_train_step
from omni_rrm_jax.train.task_kind import task_kind
from omni_rrm_jax.train.trainable import prepare_trainable


def demo_inputs(workdir: str, stage: str, smoke: bool):
  """The stage's config and its data, made in `workdir` when not there yet."""
  cfg = get_config("smoke" if smoke else "")
  paths = demo.Paths(workdir)
  if not os.path.exists(paths.train):
    demo.stage_data(cfg, paths)
  if not os.path.exists(os.path.join(paths.tokenizer, "tokenizer.json")):
    demo.stage_tokenizer(cfg, paths)
  return demo._stage_config(cfg[stage], paths), paths  # noqa: SLF001 (the demo's own paths)


def build(c, workdir: str, num_batches: int):
  """(train step, state, device batches, real tokens per batch) of config `c`."""
  kind = task_kind(c.task)
  mesh, rules = make_mesh(dict(c.mesh)), rules_from_config(dict(c.rules))
  inputs = task_inputs(model=c.model, data=c.data, media=c.media, tokenizer=c.tokenizer,
                       workdir=os.path.join(workdir, "profile_" + c.task),
                       classifier=kind.classifier)
  encoder = ExampleEncoder(inputs.tokenizer, c.data.max_length, kind.batch,
                           margin_scale=c.loss.margin_scale, media=inputs.media,
                           sft_target=c.data.get("target", "judgment"),
                           max_target_tokens=c.model.target_logits)
  dataset = make_dataset(
      inputs.train_records, encoder, batch_size=c.data.batch_size, seed=0,
      buckets=tuple(c.data.buckets), pad_id=inputs.tokenizer.pad_token_id, worker_count=0,
      process_index=0, process_count=1, agree=None, group_by_modality=False, pack=None,
      patch_buckets=tuple(c.media.patch_buckets) if inputs.media else ())
  it = iter(dataset)
  batches = [next(it) for _ in range(num_batches)]
  model = build_model(c.model, inputs.tokenizer, mesh, rules, classifier=kind.classifier, seed=0)
  tx, schedule = make_optimizer({k: v for k, v in c.optim.items() if k != "grad_accum_steps"},
                                total_steps=c.train.num_steps)
  trainable = prepare_trainable(model, c.lora, c.model.freeze, seed=0)
  graphdef, state = init_train_state(model, tx, 0, mesh=mesh, rules=rules, trainable=trainable)
  step = make_train_step(graphdef, tx, kind, grad_accum_steps=c.optim.grad_accum_steps,
                         max_nonfinite_streak=c.train.max_nonfinite_streak, mesh=mesh,
                         rules=rules, schedule=schedule, center_coef=c.loss.center_coef,
                         logits_chunk=c.model.logits_chunk,
                         target_logits=c.model.target_logits)
  ids = [k for k in ("input_ids", "chosen_input_ids", "rejected_input_ids") if k in batches[0]]
  tokens = statistics.mean(sum(int(np.prod(b[k].shape)) for k in ids) for b in batches)
  return step, state, [to_global(b, mesh, rules) for b in batches], tokens


def op_kind(name: str) -> str:
  """An XLA:CPU op's kind from its name (`copy_bitcast_fusion.41` -> copy_bitcast_fusion)."""
  return re.sub(r"[.\d]+$", "", name)


def op_metadata(hlo_text: str) -> dict[str, tuple[str, str]]:
  """{instruction: (result shape, the JAX operation it comes from)}."""
  out = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%?(\S+) = (\S+?\[[\d,]*\])\S* (.*)$", hlo_text, re.M):
    source = re.search(r'op_name="([^"]*)"', m.group(3))
    out[m.group(1)] = (m.group(2), source.group(1) if source else "")
  return out


def device_ops(trace_dir: str, steps: int) -> dict[str, list[float]]:
  """{op name: [count, thread-microseconds]} per step, from a trace's XLA:CPU events."""
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
  events = json.load(gzip.open(path))["traceEvents"]
  threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
  per_op = collections.defaultdict(lambda: [0.0, 0.0])
  for e in events:
    if e.get("ph") != "X" or "XLA" not in threads.get((e["pid"], e["tid"]), ""):
      continue
    if e["name"].startswith(("ThunkExecutor", "end:", "Slinky", "Rendezvous")):
      continue  # the executor's own spans enclose the ops; a rendezvous waits for devices
    per_op[e["name"]][0] += 1 / steps
    per_op[e["name"]][1] += e.get("dur", 0.0) / steps
  return per_op


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--stage", default="sft", choices=("rm", "sft"))
  parser.add_argument("--workdir", default="", help="a demo workdir to reuse (default: temporary)")
  parser.add_argument("--batches", type=int, default=6)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--top", type=int, default=12, help="slowest ops listed")
  parser.add_argument("--smoke", action="store_true", help="the demo's seconds-long variant")
  parser.add_argument("--target_logits", type=int, default=-1,
                      help="model.target_logits of the stage (-1: the demo's, every position)")
  parser.add_argument("--attention", default="",
                      choices=("", "reference", "xla", "blockwise"),
                      help="model.attention of the stage (default: the demo's)")
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    workdir = args.workdir or tmp
    c, _ = demo_inputs(workdir, args.stage, args.smoke)
    if args.target_logits >= 0:
      c.model.target_logits = args.target_logits
    if args.attention:
      c.model.attention = args.attention
    step, state, batches, tokens = build(c, workdir, args.batches)
    start = time.perf_counter()
    for batch in batches:  # compiles every batch shape
      state, metrics = step(state, batch)
    jax.block_until_ready(state)
    warm_s = time.perf_counter() - start
    rounds = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(args.rounds):
      start = time.perf_counter()
      for batch in batches:
        state, metrics = step(state, batch)
      jax.block_until_ready((state, metrics))
      rounds.append((time.perf_counter() - start) / len(batches))
    # Page faults of the timed steps (each 4 KiB, or 2 MiB on huge pages).
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (
        args.rounds * len(batches))
    trace_dir = os.path.join(tmp, "trace")
    jax.profiler.start_trace(trace_dir)
    for batch in batches:
      state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    jax.profiler.stop_trace()
    per_op = device_ops(trace_dir, len(batches))
    meta = op_metadata(step.lower(state, batches[-1]).compile().as_text())

  by_kind = collections.defaultdict(lambda: [0.0, 0.0])
  for name, (count, us) in per_op.items():
    by_kind[op_kind(name)][0] += count
    by_kind[op_kind(name)][1] += us
  total_us = sum(us for _, us in per_op.values())
  slowest = sorted(per_op.items(), key=lambda kv: -kv[1][1])[:args.top]
  print(json.dumps({
      "benchmark": "demo_step_profile", "stage": args.stage, "batches": args.batches,
      "target_logits": c.model.target_logits, "attention": c.model.attention,
      "tokens_per_step": tokens, "step_s": round(statistics.median(rounds), 4),
      "step_s_per_round": [round(r, 4) for r in rounds], "compile_and_first_pass_s":
      round(warm_s, 1), "device_thread_ms_per_step": round(total_us / 1e3, 1),
      "by_kind_ms": {k: round(us / 1e3, 1) for k, (_, us) in
                     sorted(by_kind.items(), key=lambda kv: -kv[1][1])[:10]},
      "slowest_ops": [{"op": name, "ms": round(us / 1e3, 2), "shape": meta.get(name, ("", ""))[0],
                       "from": meta.get(name, ("", ""))[1][-90:]} for name, (_, us) in slowest],
      "page_faults_per_step": round(faults), "load_avg": round(os.getloadavg()[0], 2),
      "huge_pages": huge_pages_asked()}))


if __name__ == "__main__":
  # Both sides with the host allocator the command line uses (core/huge_pages.py).
  from omni_rrm_jax.core.huge_pages import reexec_with_huge_pages
  reexec_with_huge_pages()
  main()
