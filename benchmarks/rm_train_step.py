"""Reward-model training step: our jitted step vs PyTorch + transformers, same config.

Both sides train a randomly initialised `Qwen2ForSequenceClassification`
(num_labels=1) of the same shape with the Bradley-Terry loss, AdamW (weight
decay on matrices only, as our optimizer does), global-norm clipping, fp32, on
the same batch (B pairs of T tokens with a padded tail, so 2B sequences per
step). Our side is the project's real step (`train/step.py`), jitted once;
its compile time is reported apart.

Timing is interleaved: each round runs `--steps_per_round` steps of PyTorch,
then as many of ours (timed as one group, dispatches overlapping as in
training), with a pause between the sides so neither library's idle threads
still spin while the other runs. Each side's seconds per step is the median
over `--rounds` rounds; `ratio` is ours / PyTorch in tokens per second
(`ratio_best_rounds` compares each side's fastest round instead, which is
less sensitive to other processes on a shared machine).

Throughput is training tokens per second (2·B·T per step). MFU is model FLOPs
per second over the machine's matmul peak: a large fp32 matmul timed in the
same run, jitted in JAX and in PyTorch (interleaved, median), the faster of the
two being the peak both sides are measured against. Model FLOPs per step are
6·N·tokens for the matmul parameters N (the embedding table is a lookup, so
it is left out) plus 12·L·T²·d per sequence for attention scores and values,
forward and backward, padded positions included. Prints one JSON line.

    python benchmarks/rm_train_step.py --size=tiny      # ~0.1M params, ~1 min on 2 cores
    python benchmarks/rm_train_step.py --size=100m      # ~100M params, ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

SIZES = {
    # ~0.1M parameters: dominated by per-step overheads.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
    # ~100M parameters (GPT-2-small-like widths, Qwen2 layers with 4 KV heads).
    "100m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=12, num_key_value_heads=4, vocab_size=32000),
}
# Per size: (pairs per step, tokens per sequence, steps per timed round, rounds).
DEFAULTS = {"tiny": (4, 256, 10, 7), "100m": (2, 256, 1, 5)}
PAUSE_S = 0.5  # lets OpenMP / Eigen worker threads stop spinning between sides


def model_flops_per_step(matmul_params: int, cfg: dict, pairs: int, length: int) -> float:
  """Forward + backward model FLOPs of one step over 2·pairs sequences."""
  seqs = 2 * pairs
  matmul = 6 * matmul_params * seqs * length
  attention = 12 * cfg["num_hidden_layers"] * length * length * cfg["hidden_size"] * seqs
  return float(matmul + attention)


def matmul_peaks(n: int = 2048, rounds: int = 5) -> dict[str, float]:
  """FLOP/s of an [n, n] fp32 matmul, jitted JAX and PyTorch, interleaved medians."""
  import jax
  import jax.numpy as jnp
  import torch
  a_jax = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
  a_torch = torch.from_numpy(np.array(a_jax))
  matmul = jax.jit(lambda x: x @ x)
  matmul(a_jax).block_until_ready()
  a_torch @ a_torch
  times = {"jax": [], "torch": []}
  for _ in range(rounds):
    start = time.perf_counter()
    matmul(a_jax).block_until_ready()
    times["jax"].append(time.perf_counter() - start)
    time.sleep(PAUSE_S)
    start = time.perf_counter()
    a_torch @ a_torch
    times["torch"].append(time.perf_counter() - start)
    time.sleep(PAUSE_S)
  return {k: 2 * n**3 / statistics.median(v) for k, v in times.items()}


def batch_arrays(pairs: int, length: int, vocab: int, seed: int = 0):
  """(ids, mask) int32 [2, pairs, length]: chosen then rejected, last quarter padded."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab, size=(2, pairs, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[:, :, length - length // 4:] = 0
  ids[mask == 0] = 0
  return ids, mask


def model_config(cfg: dict) -> dict:
  return dict(cfg, num_labels=1, pad_token_id=0, max_position_embeddings=4096,
              tie_word_embeddings=False)


def torch_runner(cfg: dict, pairs: int, length: int, lr: float, weight_decay: float):
  """(run(n) -> seconds for n steps, number of matmul parameters)."""
  import torch
  import transformers
  torch.manual_seed(0)
  model = transformers.Qwen2ForSequenceClassification(
      transformers.Qwen2Config(**model_config(cfg))).train()
  decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "bias" not in n]
  no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "bias" not in n)]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=lr)
  ids, mask = batch_arrays(pairs, length, cfg["vocab_size"])
  # Chosen rows first, then rejected: one forward over 2B rows, as ours.
  ids_t = torch.from_numpy(ids.reshape(2 * pairs, length)).long()
  mask_t = torch.from_numpy(mask.reshape(2 * pairs, length)).long()

  def step():
    rewards = model(ids_t, attention_mask=mask_t).logits[:, 0]
    loss = -torch.nn.functional.logsigmoid(rewards[:pairs] - rewards[pairs:]).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss

  def run(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
      step()
    return time.perf_counter() - start

  embed = model.model.embed_tokens.weight.numel()
  return run, sum(p.numel() for p in model.parameters()) - embed


def ours_runner(cfg: dict, pairs: int, length: int, lr: float, weight_decay: float):
  """(run(n) -> seconds for n steps, seconds of the first step, number of parameters)."""
  import jax
  from flax import nnx

  from omni_rrm_jax.models.factory import from_config
  from omni_rrm_jax.train.optimizer import make_optimizer
  from omni_rrm_jax.train.state import init_train_state
  from omni_rrm_jax.train.step import make_train_step
  from omni_rrm_jax.train.task_kind import RM
  model = from_config("Qwen2ForSequenceClassification", model_config(cfg))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  tx, schedule = make_optimizer(dict(learning_rate=lr, warmup_steps=0, weight_decay=weight_decay,
                                     grad_clip_norm=1.0), total_steps=10**6)
  graphdef, state = init_train_state(model, tx, 0)
  del model
  step = make_train_step(graphdef, tx, RM, schedule=schedule)
  ids, mask = batch_arrays(pairs, length, cfg["vocab_size"])
  batch = jax.device_put({"chosen_input_ids": ids[0], "chosen_attention_mask": mask[0],
                          "rejected_input_ids": ids[1], "rejected_attention_mask": mask[1]})
  holder = {"state": state}

  def run(n: int) -> float:
    state = holder["state"]
    start = time.perf_counter()
    for _ in range(n):
      state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    holder["state"] = state
    return time.perf_counter() - start

  first_s = run(1)  # compiles
  return run, first_s, n_params


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
  parser.add_argument("--batch", type=int, default=None, help="pairs per step")
  parser.add_argument("--length", type=int, default=None)
  parser.add_argument("--steps_per_round", type=int, default=None)
  parser.add_argument("--rounds", type=int, default=None)
  parser.add_argument("--lr", type=float, default=1e-5)
  parser.add_argument("--weight_decay", type=float, default=0.01)
  args = parser.parse_args()
  pairs, length, per_round, rounds = (
      given if given is not None else default
      for given, default in zip((args.batch, args.length, args.steps_per_round, args.rounds),
                                DEFAULTS[args.size]))
  cfg = SIZES[args.size]

  peaks = matmul_peaks()
  run_torch, torch_matmul_params = torch_runner(cfg, pairs, length, args.lr, args.weight_decay)
  run_ours, first_s, n_params = ours_runner(cfg, pairs, length, args.lr, args.weight_decay)
  matmul_params = n_params - cfg["vocab_size"] * cfg["hidden_size"]
  if matmul_params != torch_matmul_params:
    raise AssertionError(f"parameter counts differ: ours {matmul_params}, "
                         f"torch {torch_matmul_params} (without the embedding)")
  run_torch(1)  # warm-up (allocator, oneDNN primitives)
  run_ours(1)
  times = {"ours": [], "torch": []}
  for _ in range(rounds):
    for name, run in (("torch", run_torch), ("ours", run_ours)):
      time.sleep(PAUSE_S)
      times[name].append(run(per_round) / per_round)
  step_s = {k: statistics.median(v) for k, v in times.items()}

  tokens = 2 * pairs * length
  flops = model_flops_per_step(matmul_params, cfg, pairs, length)
  peak = max(peaks.values())
  print(json.dumps({
      "benchmark": "rm_train_step", "size": args.size, "n_params": n_params,
      "model": {k.replace("num_", "").replace("_size", ""): v for k, v in cfg.items()},
      "batch_pairs": pairs, "length": length, "tokens_per_step": tokens,
      "rounds": rounds, "steps_per_round": per_round,
      "ours_tokens_per_s": round(tokens / step_s["ours"], 1),
      "torch_tokens_per_s": round(tokens / step_s["torch"], 1),
      "ratio": round(step_s["torch"] / step_s["ours"], 3),
      "ratio_best_rounds": round(min(times["torch"]) / min(times["ours"]), 3),
      "ours_mfu": round(flops / step_s["ours"] / peak, 4),
      "torch_mfu": round(flops / step_s["torch"] / peak, 4),
      "matmul_peak_gflops": round(peak / 1e9, 1),
      "matmul_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
      "ours_step_s_per_round": [round(t, 4) for t in times["ours"]],
      "torch_step_s_per_round": [round(t, 4) for t in times["torch"]],
      "ours_compile_s": round(first_s - step_s["ours"], 2),
      "cpu_count": os.cpu_count(), "load_avg": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
  main()
