"""Reward-model training step: our jitted step vs PyTorch + transformers, same config.

Both sides train `Qwen2ForSequenceClassification` (num_labels=1) with the
Bradley-Terry loss and AdamW on the same batch shape (B pairs of T tokens, so
2B sequences per step). Throughput is training tokens per second (2·B·T per
step) over `--steps` timed steps after warm-up (our compile time is reported
apart). MFU is model FLOPs per second (6·N·tokens for the matmuls plus
12·L·T²·d per sequence for attention scores, forward + backward) over the
machine's measured matmul peak (a large fp32 matmul timed in the same run with
the same library). Prints one JSON line per size; `ratio` is ours / PyTorch.

    python benchmarks/rm_train_step.py                       # tiny and ~100M
    python benchmarks/rm_train_step.py --sizes tiny --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

SIZES = {
    # ~0.4M parameters: dominated by overheads.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
    # ~100M parameters (Qwen2.5-0.5B shape, fewer layers and a smaller vocabulary).
    "100m": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=6,
                 num_attention_heads=14, num_key_value_heads=2, vocab_size=32000),
}


def model_flops_per_step(n_params: int, cfg: dict, batch: int, length: int) -> float:
  seqs = 2 * batch
  matmul = 6 * n_params * seqs * length
  attention = 12 * cfg["num_hidden_layers"] * length * length * cfg["hidden_size"] * seqs
  return float(matmul + attention)


def jax_peak_flops(n: int = 2048, reps: int = 5) -> float:
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(reps):
    f(a).block_until_ready()
  return 2 * n**3 * reps / (time.perf_counter() - start)


def torch_peak_flops(n: int = 2048, reps: int = 5) -> float:
  import torch
  a = torch.ones((n, n))
  a @ a
  start = time.perf_counter()
  for _ in range(reps):
    a @ a
  return 2 * n**3 * reps / (time.perf_counter() - start)


def batch_arrays(batch: int, length: int, vocab: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab, size=(2, batch, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[:, :, length - length // 4:] = 0  # a padded tail, as real batches have
  ids[mask == 0] = 0
  return ids, mask


def run_torch(cfg: dict, batch: int, length: int, steps: int, lr: float) -> dict:
  import torch
  import transformers
  torch.manual_seed(0)
  model = transformers.Qwen2ForSequenceClassification(transformers.Qwen2Config(
      **cfg, num_labels=1, pad_token_id=0, max_position_embeddings=4096)).train()
  opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
  ids, mask = (torch.tensor(x, dtype=torch.long) for x in batch_arrays(batch, length,
                                                                        cfg["vocab_size"]))
  ids2, mask2 = ids.reshape(2 * batch, length), mask.reshape(2 * batch, length)

  def step():
    rewards = model(ids2, attention_mask=mask2).logits[:, 0]
    loss = -torch.nn.functional.logsigmoid(rewards[:batch] - rewards[batch:]).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss

  step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  elapsed = time.perf_counter() - start
  n_params = sum(p.numel() for p in model.parameters())
  return {"seconds_per_step": elapsed / steps, "n_params": n_params}


def run_ours(cfg: dict, batch: int, length: int, steps: int, lr: float) -> dict:
  import jax

  from omni_rrm_jax.models.factory import from_config
  from omni_rrm_jax.train.optimizer import make_optimizer
  from omni_rrm_jax.train.state import init_train_state
  from omni_rrm_jax.train.step import make_train_step
  model = from_config("Qwen2ForSequenceClassification",
                      dict(cfg, num_labels=1, pad_token_id=0, max_position_embeddings=4096))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      __import__("flax").nnx.state(model)))
  tx, schedule = make_optimizer(dict(learning_rate=lr, warmup_steps=0, weight_decay=0.01,
                                     grad_clip_norm=1.0), total_steps=10**6)
  graphdef, state = init_train_state(model, tx, 0)
  del model
  step = make_train_step(graphdef, tx, "rm", schedule=schedule)
  ids, mask = batch_arrays(batch, length, cfg["vocab_size"])
  b = {"chosen_input_ids": ids[0], "chosen_attention_mask": mask[0],
       "rejected_input_ids": ids[1], "rejected_attention_mask": mask[1]}
  b = jax.device_put(b)
  start = time.perf_counter()
  state, metrics = step(state, b)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, b)
  jax.block_until_ready(metrics)
  elapsed = time.perf_counter() - start
  return {"seconds_per_step": elapsed / steps, "compile_seconds": compile_s,
          "n_params": n_params}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="tiny,100m")
  parser.add_argument("--batch", type=int, default=4, help="pairs per step")
  parser.add_argument("--length", type=int, default=256)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--lr", type=float, default=1e-5)
  args = parser.parse_args()
  # Torch first, before XLA starts its thread pool (they compete for cores).
  torch_peak = torch_peak_flops()
  torch_results = {s: run_torch(SIZES[s], args.batch, args.length, args.steps, args.lr)
                   for s in args.sizes.split(",")}
  jax_peak = jax_peak_flops()
  for size in args.sizes.split(","):
    cfg = SIZES[size]
    theirs = torch_results[size]
    ours = run_ours(cfg, args.batch, args.length, args.steps, args.lr)
    tokens = 2 * args.batch * args.length
    flops = model_flops_per_step(ours["n_params"], cfg, args.batch, args.length)
    print(json.dumps({
        "benchmark": "rm_train_step", "size": size, "n_params": ours["n_params"],
        "batch_pairs": args.batch, "length": args.length, "cpu_count": os.cpu_count(),
        "ours_tokens_per_s": round(tokens / ours["seconds_per_step"], 1),
        "torch_tokens_per_s": round(tokens / theirs["seconds_per_step"], 1),
        "ratio": round(theirs["seconds_per_step"] / ours["seconds_per_step"], 3),
        "ours_mfu": round(flops / ours["seconds_per_step"] / jax_peak, 4),
        "torch_mfu": round(flops / theirs["seconds_per_step"] / torch_peak, 4),
        "ours_compile_s": round(ours["compile_seconds"], 2),
        "matmul_peak_gflops": {"jax": round(jax_peak / 1e9, 1),
                               "torch": round(torch_peak / 1e9, 1)},
        "load_avg": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
  main()
