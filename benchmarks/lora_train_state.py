"""What LoRA saves: trained parameters, optimizer state and step time, full vs LoRA.

Two parts, one JSON line:

1. `state_7b`: the train state of a Qwen2.5-7B-shaped scalar RM (hidden 3584,
   28 layers, 28 heads, 4 KV heads, intermediate 18944, vocabulary 152064,
   fp32 parameters and AdamW state), from abstract arrays only: trained and
   frozen parameter counts and optimizer-state bytes, trained fully and as a
   LoRA of rank 8, alpha 32 on every linear layer of the decoder (the recipe of
   the released omni RM).
2. `step`: the RM train step of a small decoder (`--hidden`, `--layers`) on
   this machine, full vs LoRA, timed in alternating rounds (medians) in the
   same run, so the ratio holds on a loaded machine too.

    python benchmarks/lora_train_state.py
    python benchmarks/lora_train_state.py --hidden 128 --layers 2 --rounds 2   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

QWEN_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
               num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               max_position_embeddings=32768, tie_word_embeddings=False, num_labels=1,
               pad_token_id=0)
LORA = dict(rank=8, alpha=32.0)


def _lora_section(rank: int):
  import types

  from omni_rrm_jax.models.lora import LINEAR_LAYERS
  return types.SimpleNamespace(rank=rank, alpha=LORA["alpha"], dropout=0.0, targets=LINEAR_LAYERS)


def _sizes(state) -> dict:
  from omni_rrm_jax.train.trainable import tree_size
  return {"trained_params": tree_size(state.params)[0],
          "frozen_params": tree_size(state.frozen)[0],
          "optimizer_state_bytes": tree_size(state.opt_state)[1]}


def state_7b() -> dict:
  """Abstract train states of the 7B-shaped RM, full and LoRA: nothing allocated."""
  from flax import nnx

  from omni_rrm_jax.models.architectures import get_architecture
  from omni_rrm_jax.models.factory import hf_config_for
  from omni_rrm_jax.train.optimizer import make_optimizer
  from omni_rrm_jax.train.state import abstract_train_state
  from omni_rrm_jax.train.trainable import prepare_trainable

  name = "Qwen2ForSequenceClassification"
  arch = get_architecture(name)
  cfg = arch.make_config(hf_config_for(name, QWEN_7B), dtype="bfloat16", param_dtype="float32")
  tx, _ = make_optimizer(dict(learning_rate=1e-4, warmup_steps=0), total_steps=1000)
  out = {}
  for label, rank in (("full", 0), ("lora", LORA["rank"])):
    holder = {}

    def build(rank=rank, holder=holder):
      model = arch.module(cfg, rngs=nnx.Rngs(0))
      holder["trainable"] = prepare_trainable(model, _lora_section(rank), ())
      return model

    model = nnx.eval_shape(build)
    _, state = abstract_train_state(model, tx, trainable=holder["trainable"])
    out[label] = _sizes(state)
  out["optimizer_state_ratio"] = (out["lora"]["optimizer_state_bytes"]
                                  / out["full"]["optimizer_state_bytes"])
  return out


def step_times(hidden: int, layers: int, pairs: int, length: int, rounds: int,
               per_round: int) -> dict:
  """Median seconds per RM train step, full and LoRA, in alternating rounds."""
  import jax

  from omni_rrm_jax.models.factory import from_config
  from omni_rrm_jax.train.optimizer import make_optimizer
  from omni_rrm_jax.train.state import init_train_state
  from omni_rrm_jax.train.step import make_train_step
  from omni_rrm_jax.train.task_kind import RM
  from omni_rrm_jax.train.trainable import prepare_trainable

  cfg = dict(QWEN_7B, vocab_size=4096, hidden_size=hidden, intermediate_size=4 * hidden,
             num_hidden_layers=layers, num_attention_heads=max(hidden // 64, 2),
             num_key_value_heads=max(hidden // 256, 1))
  rng = np.random.default_rng(0)
  ids = rng.integers(1, cfg["vocab_size"], (2, pairs, length)).astype(np.int32)
  mask = np.ones_like(ids)
  batch = {"chosen_input_ids": ids[0], "chosen_attention_mask": mask[0],
           "rejected_input_ids": ids[1], "rejected_attention_mask": mask[1]}
  runners, sizes = {}, {}
  for label, rank in (("full", 0), ("lora", LORA["rank"])):
    model = from_config("Qwen2ForSequenceClassification", cfg)
    trainable = prepare_trainable(model, _lora_section(rank), ())
    tx, schedule = make_optimizer(dict(learning_rate=1e-4, warmup_steps=0), total_steps=10**6)
    graphdef, state = init_train_state(model, tx, trainable=trainable)
    sizes[label] = _sizes(state)
    step = make_train_step(graphdef, tx, RM, schedule=schedule)
    holder = {"state": state}

    def run(n, step=step, holder=holder):
      state = holder["state"]
      start = time.perf_counter()
      for _ in range(n):
        state, metrics = step(state, batch)
      jax.block_until_ready((state, metrics))
      holder["state"] = state
      return time.perf_counter() - start

    run(1)  # compiles
    runners[label] = run
  times = {k: [] for k in runners}
  for _ in range(rounds):
    for label, run in runners.items():
      times[label].append(run(per_round) / per_round)
  median = {k: statistics.median(v) for k, v in times.items()}
  return {"config": dict(hidden=hidden, layers=layers, pairs=pairs, length=length),
          "seconds_per_step": median, "lora_over_full": median["lora"] / median["full"],
          "sizes": sizes, "rounds": times}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--hidden", type=int, default=512)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--pairs", type=int, default=2)
  parser.add_argument("--length", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps_per_round", type=int, default=3)
  args = parser.parse_args()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  result = {"state_7b": state_7b(),
            "step": step_times(args.hidden, args.layers, args.pairs, args.length, args.rounds,
                               args.steps_per_round),
            "load_average": os.getloadavg()[0]}
  print(json.dumps(result))


if __name__ == "__main__":
  main()
