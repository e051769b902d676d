"""Reward-model training step: our jitted step vs PyTorch + transformers, same config.

Both sides train a randomly initialised `Qwen2ForSequenceClassification`
(num_labels=1) of the same shape with the Bradley-Terry loss, AdamW (weight
decay on matrices only, as our optimizer does), global-norm clipping, fp32, on
the same batch (B pairs of T tokens with a padded tail, so 2B sequences per
step). Our side is the project's real step (`train/step.py`), compiled once
ahead of time; its lower + compile time is reported apart.

Timing is interleaved: each round runs `--steps_per_round` steps of PyTorch,
then as many of ours (timed as one group, dispatches overlapping as in
training), with a pause between the sides so neither library's idle threads
still spin while the other runs. Each side's seconds per step is the median
over `--rounds` rounds; `ratio` is ours / PyTorch in tokens per second
(`ratio_best_rounds` compares each side's fastest round instead, which is
less sensitive to other processes on a shared machine). Past a size's default
batch and length, the defaults of `--steps_per_round` and `--rounds` shrink
with the step's FLOPs (at least 1 step a round and 3 rounds).

Throughput is training tokens per second (2·B·T per step). MFU is model FLOPs
per second over the machine's matmul peak: a large fp32 matmul timed in the
same run, jitted in JAX and in PyTorch (interleaved, median), the faster of the
two being the peak both sides are measured against. Model FLOPs per step are
6·N·tokens for the matmul parameters N (the embedding table is a lookup, so
it is left out) plus 12·L·T²·d per sequence for attention scores and values,
forward and backward, padded positions included; recomputation (below) is not
counted.

Memory. Both sides live in one process, so before anything is allocated the
script adds up the peak: this process's resident memory, our train state and
XLA's temporaries for the compiled step (XLA's own count), PyTorch's
parameters, gradients and AdamW moments (16 bytes a parameter), and the larger
of our temporaries and PyTorch's estimated activations (the two sides never
run at once). A point over `--memory_gib` (or over what the machine has
available) prints `"fits": false` with the numbers and measures nothing; an
allocation failure during the run is reported the same way. Long sequences
need rematerialisation: our reference attention keeps fp32 [2B, heads, T, T]
scores per layer for the backward, PyTorch's fused CPU attention does not.
`--remat auto` (default) tries, in order, neither side, our layers
rematerialised (PyTorch keeps its activations: it needs no recomputation, so
it is not slowed down), then both (PyTorch's per-layer gradient checkpointing
too, when its own activations do not fit); `off`, `ours` and `both` force one.
The JSON says which (`remat`). XLA:CPU undoes `jax.checkpoint` by default (its
`cse_barrier_expander` pass), so a rematerialised step is compiled with that
pass disabled, as `compile_check.py` does. Prints one JSON line.

    python benchmarks/rm_train_step.py --size=tiny      # ~0.1M params, ~1 min on 2 cores
    python benchmarks/rm_train_step.py --size=25m       # ~25M params, ~1 min on 2 cores
    python benchmarks/rm_train_step.py --size=100m      # ~100M params, ~3 min on 2 cores
    python benchmarks/rm_train_step.py --size=400m      # ~400M params, 15 GiB, ~4 min on 2 cores
    python benchmarks/rm_train_step.py --size=25m --length=4096 --batch=1   # remat on our side
    python benchmarks/rm_train_step.py --size=400m --count_only   # parameter counts, no step
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import time
from typing import Any, Callable

import numpy as np

from omni_rrm_jax.core.huge_pages import huge_pages_asked

SIZES = {
    # ~0.1M parameters: dominated by per-step overheads.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
    # ~25M parameters, half of them the embedding (the 100m shape's proportions:
    # head size 64, MLP 8/3 the width, 8 layers of width 384).
    "25m": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=8,
                num_attention_heads=6, num_key_value_heads=2, vocab_size=32000),
    # ~100M parameters (GPT-2-small-like widths, Qwen2 layers with 4 KV heads).
    "100m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=12, num_key_value_heads=4, vocab_size=32000),
    # ~400M parameters (GPT-2-medium depth and width; a Qwen-style MLP 4x the
    # width, 4 KV heads).
    "400m": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                 num_attention_heads=16, num_key_value_heads=4, vocab_size=32000),
}
# Per size: (pairs per step, tokens per sequence, steps per timed round, rounds).
DEFAULTS = {"tiny": (4, 256, 10, 7), "25m": (2, 256, 2, 5), "100m": (2, 256, 1, 5),
            "400m": (1, 256, 1, 3)}
PAUSE_S = 0.5  # lets OpenMP / Eigen worker threads stop spinning between sides
MEMORY_GIB = 20.0  # of the 24 GiB machine, for both sides together
# Our attention settings that run on a CPU (`model.attention`).
CPU_ATTENTIONS = ("reference", "xla", "blockwise", "cpu_fused")
# (ours rematerialised, PyTorch gradient checkpointing), tried in order.
REMAT_MODES = {"auto": ((False, False), (True, False), (True, True)),
               "off": ((False, False),), "ours": ((True, False),), "both": ((True, True),)}
# Keeps the optimization barriers `jax.checkpoint` leaves around each
# rematerialised layer: XLA:CPU expands them early by default and its CSE then
# merges the recomputed forward back into the original (no memory saved).
REMAT_COMPILER_OPTIONS = {"xla_disable_hlo_passes": "cse_barrier_expander"}
GIB = 2**30


def model_flops_per_step(matmul_params: int, cfg: dict, pairs: int, length: int) -> float:
  """Forward + backward model FLOPs of one step over 2·pairs sequences."""
  seqs = 2 * pairs
  matmul = 6 * matmul_params * seqs * length
  attention = 12 * cfg["num_hidden_layers"] * length * length * cfg["hidden_size"] * seqs
  return float(matmul + attention)


def matmul_params_of(cfg: dict) -> int:
  """Parameters in matrix products (all but the embedding table), from the shape alone."""
  e, i, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
  kv = cfg["num_key_value_heads"] * (e // cfg["num_attention_heads"])
  # q, k, v (with biases), o, gate / up / down, two norms; the final norm and the score head.
  layer = (e * e + e) + 2 * (e * kv + kv) + e * e + 3 * e * i + 2 * e
  return layers * layer + e + e


def round_plan(size: str, pairs: int, length: int) -> tuple[int, int]:
  """(steps per round, rounds): the size's defaults, fewer when a step costs more."""
  d_pairs, d_length, per_round, rounds = DEFAULTS[size]
  cfg = SIZES[size]
  n = matmul_params_of(cfg)
  scale = model_flops_per_step(n, cfg, d_pairs, d_length) / model_flops_per_step(
      n, cfg, pairs, length)
  if scale >= 1:
    return per_round, rounds
  return max(1, round(per_round * scale)), max(3, round(rounds * scale))


def matmul_peaks(n: int = 2048, rounds: int = 5, pause_s: float = PAUSE_S) -> dict[str, float]:
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
    time.sleep(pause_s)
    start = time.perf_counter()
    a_torch @ a_torch
    times["torch"].append(time.perf_counter() - start)
    time.sleep(pause_s)
  return {k: 2 * n**3 / statistics.median(v) for k, v in times.items()}


def batch_arrays(pairs: int, length: int, vocab: int, seed: int = 0):
  """(ids, mask) int32 [2, pairs, length]: chosen then rejected, last quarter padded."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab, size=(2, pairs, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[:, :, length - length // 4:] = 0
  ids[mask == 0] = 0
  return ids, mask


def model_config(cfg: dict, length: int = 0) -> dict:
  return dict(cfg, num_labels=1, pad_token_id=0, max_position_embeddings=max(4096, length),
              tie_word_embeddings=False)


def torch_activation_bytes(cfg: dict, pairs: int, length: int, checkpointing: bool) -> int:
  """PyTorch's estimated bytes for the backward (fp32), with the step's transients.

  Per layer and token, a Qwen2 decoder layer with fused CPU attention saves
  about 10·hidden + 4·intermediate + 160 floats (counted with saved-tensor
  hooks at these shapes); with gradient checkpointing each layer keeps its
  input and one layer is recomputed at a time. Two layers' worth of gradients
  in flight and the [2B, 1, T, T] mask (as fp32) are added.
  """
  e, i, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
  tokens = 2 * pairs * length
  layer = 4 * tokens * (10 * e + 4 * i + 160)
  kept = layers * 4 * tokens * e + layer if checkpointing else layers * layer
  return kept + 2 * layer + 4 * 2 * pairs * length * length


def torch_runner(cfg: dict, pairs: int, length: int, lr: float, weight_decay: float,
                 checkpointing: bool = False):
  """(run(n) -> seconds for n steps, number of matmul parameters).

  checkpointing: transformers' per-layer gradient checkpointing (non-reentrant).
  """
  import torch
  import transformers
  torch.manual_seed(0)
  model = transformers.Qwen2ForSequenceClassification(
      transformers.Qwen2Config(**model_config(cfg, length))).train()
  if checkpointing:
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
      model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # its name in older transformers
      model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
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


def _optimizer(lr: float, weight_decay: float):
  from omni_rrm_jax.train.optimizer import make_optimizer
  return make_optimizer(dict(learning_rate=lr, warmup_steps=0, weight_decay=weight_decay,
                             grad_clip_norm=1.0), total_steps=10**6)


def _our_model(cfg: dict, length: int, remat: bool, attention: str = "reference"):
  from omni_rrm_jax.models.factory import from_config
  return from_config("Qwen2ForSequenceClassification", model_config(cfg, length), remat=remat,
                     attention=attention)


@dataclasses.dataclass
class OurStep:
  """Our step compiled for one shape, before any of its state exists."""
  executable: Callable
  n_params: int
  remat: bool
  attention: str  # the text decoder's attention implementation (`model.attention`)
  argument_bytes: int  # train state + batch
  temp_bytes: int  # XLA's temporaries: activations, gradients, update
  compile_s: float  # lower + compile


def compile_ours(cfg: dict, pairs: int, length: int, lr: float, weight_decay: float,
                 remat: bool = False, attention: str = "reference") -> OurStep:
  """Lowers and compiles our train step from abstract shapes (nothing allocated)."""
  import jax
  from flax import nnx

  from omni_rrm_jax.train.state import abstract_train_state
  from omni_rrm_jax.train.step import make_train_step
  from omni_rrm_jax.train.task_kind import RM
  tx, schedule = _optimizer(lr, weight_decay)
  model = nnx.eval_shape(lambda: _our_model(cfg, length, remat, attention))
  graphdef, state = abstract_train_state(model, tx)
  step = make_train_step(graphdef, tx, RM, schedule=schedule)
  shape = jax.ShapeDtypeStruct((pairs, length), np.int32)
  batch = {k: shape for k in ("chosen_input_ids", "chosen_attention_mask",
                              "rejected_input_ids", "rejected_attention_mask")}
  start = time.perf_counter()
  executable = step.lower(state, batch).compile(REMAT_COMPILER_OPTIONS if remat else None)
  compile_s = time.perf_counter() - start
  memory = executable.memory_analysis()
  return OurStep(executable=executable,
                 n_params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params)),
                 remat=remat, attention=attention,
                 argument_bytes=int(memory.argument_size_in_bytes),
                 temp_bytes=int(memory.temp_size_in_bytes), compile_s=compile_s)


def ours_runner(compiled: OurStep, cfg: dict, pairs: int, length: int, lr: float,
                weight_decay: float) -> Callable[[int], float]:
  """Allocates our train state and batch; run(n) -> seconds for n steps of `compiled`."""
  import jax

  from omni_rrm_jax.train.state import init_train_state
  tx, _ = _optimizer(lr, weight_decay)
  model = _our_model(cfg, length, compiled.remat, compiled.attention)
  _, state = init_train_state(model, tx, 0)
  del model
  ids, mask = batch_arrays(pairs, length, cfg["vocab_size"])
  batch = jax.device_put({"chosen_input_ids": ids[0], "chosen_attention_mask": mask[0],
                          "rejected_input_ids": ids[1], "rejected_attention_mask": mask[1]})
  holder = {"state": state}
  step = compiled.executable

  def run(n: int) -> float:
    state = holder["state"]
    start = time.perf_counter()
    for _ in range(n):
      state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    holder["state"] = state
    return time.perf_counter() - start

  return run


def parameter_counts(cfg: dict) -> dict[str, int]:
  """Both sides' parameter counts from their model definitions, nothing allocated."""
  import jax
  import torch
  import transformers
  from flax import nnx
  model = nnx.eval_shape(lambda: _our_model(cfg, 0, False))
  ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  with torch.device("meta"):
    theirs = transformers.Qwen2ForSequenceClassification(
        transformers.Qwen2Config(**model_config(cfg)))
  embedding = cfg["vocab_size"] * cfg["hidden_size"]
  return {"ours": ours, "torch": sum(p.numel() for p in theirs.parameters()),
          "embedding": embedding, "matmul": ours - embedding}


def _rss_bytes() -> int:
  """This process's resident memory now (its peak so far where /proc is missing)."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except (OSError, ValueError, IndexError):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _available_bytes() -> int | None:
  """The kernel's MemAvailable (None where /proc/meminfo is missing)."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def memory_plan(compiled: OurStep, cfg: dict, pairs: int, length: int, checkpointing: bool,
                budget_gib: float) -> dict[str, Any]:
  """The estimated peak of the process with both sides allocated, against the limit."""
  rss, available = _rss_bytes(), _available_bytes()
  torch_state = 16 * compiled.n_params  # parameters, gradients, two AdamW moments (fp32)
  torch_act = torch_activation_bytes(cfg, pairs, length, checkpointing)
  peak = rss + compiled.argument_bytes + torch_state + max(compiled.temp_bytes, torch_act)
  limit = budget_gib * GIB if available is None else min(budget_gib * GIB, rss + available)
  gib = lambda n: round(n / GIB, 2)  # noqa: E731
  return {"fits": peak <= limit, "estimated_peak": gib(peak), "limit": gib(limit),
          "budget": budget_gib, "available": None if available is None else gib(available),
          "process_before": gib(rss), "ours_state_and_batch": gib(compiled.argument_bytes),
          "ours_temporaries": gib(compiled.temp_bytes), "torch_state": gib(torch_state),
          "torch_activations_estimate": gib(torch_act)}


def _is_out_of_memory(error: BaseException) -> bool:
  text = str(error).lower()
  return isinstance(error, MemoryError) or any(
      s in text for s in ("resource_exhausted", "out of memory", "can't allocate",
                          "cannot allocate", "not enough memory"))


def _resolve(args) -> tuple[int, int, int, int]:
  """(pairs, length, steps per round, rounds) from the flags and the size's defaults."""
  d_pairs, d_length, _, _ = DEFAULTS[args.size]
  pairs = args.batch if args.batch is not None else d_pairs
  length = args.length if args.length is not None else d_length
  per_round, rounds = round_plan(args.size, pairs, length)
  if args.steps_per_round is not None:
    per_round = args.steps_per_round
  if args.rounds is not None:
    rounds = args.rounds
  return pairs, length, per_round, rounds


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
  parser.add_argument("--batch", type=int, default=None, help="pairs per step")
  parser.add_argument("--length", type=int, default=None)
  parser.add_argument("--steps_per_round", type=int, default=None)
  parser.add_argument("--rounds", type=int, default=None)
  parser.add_argument("--lr", type=float, default=1e-5)
  parser.add_argument("--weight_decay", type=float, default=0.01)
  parser.add_argument("--remat", default="auto", choices=tuple(REMAT_MODES),
                      help="auto: the first of off / ours / both that fits; ours: our layers "
                           "rematerialised; both: and PyTorch's gradient checkpointing")
  parser.add_argument("--attention", default="reference", choices=CPU_ATTENTIONS,
                      help="our text decoder's attention (`model.attention`); PyTorch's side "
                           "always runs transformers' default (`sdpa`)")
  parser.add_argument("--memory_gib", type=float, default=MEMORY_GIB,
                      help="largest estimated peak of the process (both sides) to run")
  parser.add_argument("--matmul_n", type=int, default=2048, help="side of the peak matmul")
  parser.add_argument("--matmul_rounds", type=int, default=5)
  parser.add_argument("--pause_s", type=float, default=PAUSE_S,
                      help="idle seconds before each side's round")
  parser.add_argument("--count_only", action="store_true",
                      help="print both sides' parameter counts and exit (no step)")
  args = parser.parse_args()
  cfg = SIZES[args.size]
  if args.count_only:
    print(json.dumps({"benchmark": "rm_train_step", "size": args.size, "model": cfg,
                      "params": parameter_counts(cfg)}))
    return
  pairs, length, per_round, rounds = _resolve(args)
  tokens = 2 * pairs * length
  head = {"benchmark": "rm_train_step", "size": args.size,
          "model": {k.replace("num_", "").replace("_size", ""): v for k, v in cfg.items()},
          "batch_pairs": pairs, "length": length, "tokens_per_step": tokens,
          "attention": args.attention}

  def report(**fields):
    print(json.dumps({**head, **fields, "cpu_count": os.cpu_count(),
                      "load_avg": round(os.getloadavg()[0], 2),
                      "huge_pages": huge_pages_asked(),
                      "peak_rss_gib": round(
                          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2)}))

  for ours_remat, torch_checkpointing in REMAT_MODES[args.remat]:
    compiled = compile_ours(cfg, pairs, length, args.lr, args.weight_decay, ours_remat,
                            args.attention)
    memory = memory_plan(compiled, cfg, pairs, length, torch_checkpointing, args.memory_gib)
    if memory["fits"]:
      break
  remat = {"mode": args.remat, "ours": ours_remat, "torch": torch_checkpointing}
  if ours_remat:
    remat["ours_compiler_options"] = REMAT_COMPILER_OPTIONS
  head["n_params"] = compiled.n_params
  if not memory["fits"]:
    report(fits=False, remat=remat, memory_gib=memory)
    return
  peaks = matmul_peaks(args.matmul_n, args.matmul_rounds, args.pause_s)
  try:
    run_torch, torch_matmul_params = torch_runner(cfg, pairs, length, args.lr,
                                                  args.weight_decay, torch_checkpointing)
    run_ours = ours_runner(compiled, cfg, pairs, length, args.lr, args.weight_decay)
    matmul_params = compiled.n_params - cfg["vocab_size"] * cfg["hidden_size"]
    if matmul_params != torch_matmul_params:
      raise AssertionError(f"parameter counts differ: ours {matmul_params}, "
                           f"torch {torch_matmul_params} (without the embedding)")
    run_torch(1)  # warm-up (allocator, oneDNN primitives)
    run_ours(1)
    times = {"ours": [], "torch": []}
    for _ in range(rounds):
      for name, run in (("torch", run_torch), ("ours", run_ours)):
        time.sleep(args.pause_s)
        times[name].append(run(per_round) / per_round)
  except (MemoryError, RuntimeError) as error:
    if not _is_out_of_memory(error):
      raise
    report(fits=False, remat=remat, memory_gib=memory,
           error=f"{type(error).__name__}: {str(error).splitlines()[0][:300]}")
    return
  step_s = {k: statistics.median(v) for k, v in times.items()}

  flops = model_flops_per_step(matmul_params, cfg, pairs, length)
  peak = max(peaks.values())
  report(
      fits=True, rounds=rounds, steps_per_round=per_round,
      ours_tokens_per_s=round(tokens / step_s["ours"], 1),
      torch_tokens_per_s=round(tokens / step_s["torch"], 1),
      ratio=round(step_s["torch"] / step_s["ours"], 3),
      ratio_best_rounds=round(min(times["torch"]) / min(times["ours"]), 3),
      ours_mfu=round(flops / step_s["ours"] / peak, 4),
      torch_mfu=round(flops / step_s["torch"] / peak, 4),
      model_gflops_per_step=round(flops / 1e9, 3),
      matmul_peak_gflops=round(peak / 1e9, 1),
      matmul_gflops={k: round(v / 1e9, 1) for k, v in peaks.items()},
      ours_step_s_per_round=[round(t, 4) for t in times["ours"]],
      torch_step_s_per_round=[round(t, 4) for t in times["torch"]],
      ours_compile_s=round(compiled.compile_s, 2), remat=remat, memory_gib=memory)


if __name__ == "__main__":
  # Both sides with glibc's default allocator unless OMNI_RRM_HUGE_PAGES=1
  # (core/huge_pages.py: huge pages measured the two libraries' interplay).
  from omni_rrm_jax.core.huge_pages import reexec_with_huge_pages
  reexec_with_huge_pages(default=False)
  main()
