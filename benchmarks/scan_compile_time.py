"""Compile time of the RM train step with the decoder layers in a loop vs stacked and scanned.

Lowers and compiles the real jitted train step (`train/step.py`) of a tiny
`Qwen2ForSequenceClassification` of `--layers` layers (hidden 64, 4 heads, 2 KV
heads), from abstract arrays only, once with `scan_layers=False` (one copy of
the layer body per layer in the program) and once with `scan_layers=True` (one
layer body inside a scan). Each setting is timed in a fresh process, so neither
profits from the other's tracing caches. Prints one JSON line per setting.

    python benchmarks/scan_compile_time.py                 # 12 layers, remat on
    python benchmarks/scan_compile_time.py --layers 24 --remat 0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def measure(layers: int, scan: bool, remat: bool, batch: int, length: int) -> dict:
  """Lower and compile times (seconds) of one setting, in this process."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from omni_rrm_jax.models.architectures import get_architecture
  from omni_rrm_jax.models.factory import hf_config_for
  from omni_rrm_jax.train.optimizer import make_optimizer
  from omni_rrm_jax.train.state import abstract_train_state
  from omni_rrm_jax.train.step import make_train_step
  from omni_rrm_jax.train.task_kind import RM

  name = "Qwen2ForSequenceClassification"
  hf = hf_config_for(name, dict(
      vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
      tie_word_embeddings=False, num_labels=1, pad_token_id=0))
  arch = get_architecture(name)
  cfg = arch.make_config(hf, remat=remat, scan_layers=scan)
  model = nnx.eval_shape(lambda: arch.module(cfg, rngs=nnx.Rngs(0)))
  tx, schedule = make_optimizer(dict(learning_rate=1e-4, warmup_steps=1, weight_decay=0.0),
                                total_steps=10)
  graphdef, state = abstract_train_state(model, tx)
  step = make_train_step(graphdef, tx, RM, schedule=schedule)
  tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  batch_arrays = {k: tokens for k in ("chosen_input_ids", "chosen_attention_mask",
                                      "rejected_input_ids", "rejected_attention_mask")}
  start = time.perf_counter()
  lowered = step.lower(state, batch_arrays)
  lower_s = time.perf_counter() - start
  lowered.compile()
  compile_s = time.perf_counter() - start - lower_s
  return {"benchmark": "scan_compile_time", "layers": layers, "scan_layers": scan,
          "remat": remat, "batch_pairs": batch, "length": length, "backend": jax.default_backend(),
          "lower_s": round(lower_s, 2), "compile_s": round(compile_s, 2),
          "lower_plus_compile_s": round(lower_s + compile_s, 2)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--layers", type=int, default=12)
  parser.add_argument("--remat", type=int, default=1)
  parser.add_argument("--batch", type=int, default=2, help="pairs per step")
  parser.add_argument("--length", type=int, default=64)
  parser.add_argument("--scan", type=int, default=-1,
                      help="0 or 1: time that setting here; -1: both, each in its own process")
  args = parser.parse_args()
  if args.scan in (0, 1):
    print(json.dumps(measure(args.layers, bool(args.scan), bool(args.remat), args.batch,
                             args.length)))
    return
  for scan in (0, 1):
    subprocess.run([sys.executable, __file__, "--scan", str(scan), "--layers", str(args.layers),
                    "--remat", str(args.remat), "--batch", str(args.batch),
                    "--length", str(args.length)], check=True)


if __name__ == "__main__":
  main()
