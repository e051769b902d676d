"""Cost of checking the non-finite streak every step, on the tiny RM's train step.

The RM/SFT loop checks every step's `nonfinite_streak` one step late
(`train/nonfinite_check.py`). This times the tiny RM step (`configs/rm.py:tiny`'s
model and batch: 2 layers of width 64, 16 pairs of 64 tokens, one CPU device)
three ways, interleaved in rounds in one process so that the machine's load
hits all of them alike:

  none      no check between log steps (what the loop did before);
  lagged    `NonfiniteCheck.push` after each dispatch (what the loop does);
  blocking  the step's metrics fetched right after each step (for scale).

Each step feeds a host numpy batch through `to_global`, as the loop does, so
host work can overlap a queued step. A variant's seconds per step is its median
over the rounds; `ratio_lagged` is lagged / none (1.0: no cost). Prints one
JSON line.

    python benchmarks/nonfinite_check_overhead.py        # ~1 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

MODEL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=1024, num_labels=1, pad_token_id=0,
             tie_word_embeddings=False)
PAUSE_S = 0.3  # lets idle worker threads stop spinning between variants


def host_batch(pairs: int, length: int, seed: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, MODEL["vocab_size"], size=(2, pairs, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[:, :, length - length // 4:] = 0
  ids[mask == 0] = 0
  return {"chosen_input_ids": ids[0], "chosen_attention_mask": mask[0],
          "rejected_input_ids": ids[1], "rejected_attention_mask": mask[1]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--pairs", type=int, default=16)
  parser.add_argument("--length", type=int, default=64)
  parser.add_argument("--steps_per_round", type=int, default=30)
  parser.add_argument("--rounds", type=int, default=9)
  args = parser.parse_args()

  import jax

  from omni_rrm_jax.models.factory import from_config
  from omni_rrm_jax.sharding.batch import to_global
  from omni_rrm_jax.sharding.mesh import make_mesh
  from omni_rrm_jax.sharding.rules import DEFAULT_RULES
  from omni_rrm_jax.train.nonfinite_check import NonfiniteCheck
  from omni_rrm_jax.train.optimizer import make_optimizer
  from omni_rrm_jax.train.state import init_train_state
  from omni_rrm_jax.train.step import make_train_step
  from omni_rrm_jax.train.task_kind import RM

  mesh = make_mesh(dict(data=-1, fsdp=1, tensor=1))
  model = from_config("Qwen2ForSequenceClassification", MODEL)
  tx, schedule = make_optimizer(dict(learning_rate=1e-3, warmup_steps=0, weight_decay=0.01,
                                     grad_clip_norm=1.0), total_steps=10**6)
  graphdef, state = init_train_state(model, tx, 0, mesh=mesh)
  del model
  step = make_train_step(graphdef, tx, RM, schedule=schedule, mesh=mesh)
  batches = [host_batch(args.pairs, args.length, seed) for seed in range(4)]
  holder = {"state": state}

  def run(variant: str, n: int) -> float:
    state, check = holder["state"], NonfiniteCheck(limit=10**9)
    start = time.perf_counter()
    for i in range(n):
      state, metrics = step(state, to_global(batches[i % len(batches)], mesh, DEFAULT_RULES))
      if variant == "lagged":
        check.push(metrics)
      elif variant == "blocking":
        jax.device_get(metrics)
    check.flush()
    jax.block_until_ready(state)
    holder["state"] = state
    return (time.perf_counter() - start) / n

  run("none", 2)  # compiles
  variants = ("none", "lagged", "blocking")
  times = {v: [] for v in variants}
  for r in range(args.rounds):
    # Rotate the order so no variant always runs right after another.
    for v in variants[r % 3:] + variants[:r % 3]:
      time.sleep(PAUSE_S)
      times[v].append(run(v, args.steps_per_round))
  step_s = {v: statistics.median(t) for v, t in times.items()}
  print(json.dumps({
      "benchmark": "nonfinite_check_overhead", "pairs": args.pairs, "length": args.length,
      "rounds": args.rounds, "steps_per_round": args.steps_per_round,
      "step_ms": {v: round(1e3 * s, 3) for v, s in step_s.items()},
      "ratio_lagged": round(step_s["lagged"] / step_s["none"], 3),
      "ratio_blocking": round(step_s["blocking"] / step_s["none"], 3),
      "step_ms_per_round": {v: [round(1e3 * s, 2) for s in t] for v, t in times.items()},
      "cpu_count": os.cpu_count(), "load_avg": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
  main()
