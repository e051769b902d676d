"""RM train step on 2 JAX processes x 4 devices vs 1 process x 8 devices, same machine.

Both sides run the project's jitted RM step (`train/step.py`) on one global
batch sharded over a data-parallel mesh of 8 simulated CPU devices; the 2-process
side joins through `jax.distributed` on 127.0.0.1 with gloo collectives, so its
gradient all-reduce crosses processes. The sides alternate (`--rounds` groups
each, fresh processes every time); each group reports the median seconds per
step over its timed rounds, after a compile and a warm-up round. `ratio` is the
2-process time per step over the 1-process one (median over groups): the cost of
crossing processes on one host, an upper bound for the same step on a pod whose
hosts each own their devices. Prints one JSON line.

    python benchmarks/multihost_step.py        # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=512, num_labels=1, pad_token_id=0,
             max_position_embeddings=1024, tie_word_embeddings=False)


def worker(args) -> None:
  """One process: build the sharded step, time it, print its seconds per step."""
  if args.num_processes > 1:
    from omni_rrm_jax.main import initialize_distributed
    initialize_distributed(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
  import jax

  from omni_rrm_jax.models.factory import from_config
  from omni_rrm_jax.sharding.batch import to_global
  from omni_rrm_jax.sharding.mesh import make_mesh
  from omni_rrm_jax.train.optimizer import make_optimizer
  from omni_rrm_jax.train.state import init_train_state
  from omni_rrm_jax.train.step import make_train_step
  from omni_rrm_jax.train.task_kind import RM

  mesh = make_mesh({"data": -1})
  model = from_config("Qwen2ForSequenceClassification", MODEL, mesh=mesh)
  tx, schedule = make_optimizer(dict(learning_rate=1e-4, warmup_steps=0, weight_decay=0.0,
                                     grad_clip_norm=1.0), total_steps=10**6)
  graphdef, state = init_train_state(model, tx, 0, mesh=mesh)
  step = make_train_step(graphdef, tx, RM, mesh=mesh, schedule=schedule)
  rng = np.random.default_rng(0)
  rows = args.pairs // jax.process_count()
  first = jax.process_index() * rows
  ids = rng.integers(3, MODEL["vocab_size"], size=(2, args.pairs, args.length)).astype(np.int32)
  local = {"chosen_input_ids": ids[0, first:first + rows],
           "rejected_input_ids": ids[1, first:first + rows],
           "chosen_attention_mask": np.ones((rows, args.length), np.int32),
           "rejected_attention_mask": np.ones((rows, args.length), np.int32)}
  batch = to_global(local, mesh)
  times = []
  for r in range(args.timed_rounds + 2):  # round 0 compiles, round 1 warms up
    start = time.perf_counter()
    for _ in range(args.steps):
      state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - start) / args.steps)
  if jax.process_index() == 0:
    print("RESULT " + json.dumps({"seconds_per_step": statistics.median(times[2:])}), flush=True)


def group(n: int, args) -> float:
  """Starts `n` worker processes; the median seconds per step process 0 saw."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={8 // n}",
             PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  procs = [subprocess.Popen(
      [sys.executable, __file__, "--worker", f"--num_processes={n}", f"--process_id={i}",
       f"--port={port}", f"--pairs={args.pairs}", f"--length={args.length}",
       f"--steps={args.steps}", f"--timed_rounds={args.timed_rounds}"],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in range(n)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  if any(p.returncode for p in procs):
    raise RuntimeError(f"a benchmark process failed: exit codes {[p.returncode for p in procs]}")
  line = next(l for l in outs[0].splitlines() if l.startswith("RESULT "))
  return json.loads(line[len("RESULT "):])["seconds_per_step"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--num_processes", type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument("--process_id", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--pairs", type=int, default=8, help="global pairs per step")
  parser.add_argument("--length", type=int, default=128, help="tokens per sequence")
  parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
  parser.add_argument("--timed_rounds", type=int, default=5, help="timed rounds per group")
  parser.add_argument("--rounds", type=int, default=2, help="groups per side, alternating")
  args = parser.parse_args()
  if args.worker:
    worker(args)
    return
  one, two = [], []
  for _ in range(args.rounds):
    one.append(group(1, args))
    two.append(group(2, args))
  print(json.dumps({
      "benchmark": "multihost_rm_step", "pairs": args.pairs, "length": args.length,
      "one_process_s_per_step": statistics.median(one),
      "two_processes_s_per_step": statistics.median(two),
      "ratio": statistics.median(two) / statistics.median(one),
      "rounds_one": one, "rounds_two": two, "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
  main()
