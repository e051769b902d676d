"""Ahead-of-time check that a 7B-class RM train step fits a pod, on faked host devices.

Lowers and compiles the real jitted train step (`train/step.py`) of a
Qwen2.5-7B-shaped `Qwen2ForSequenceClassification` (hidden 3584, 28 layers,
28 heads, 4 KV heads, intermediate 18944, vocabulary 152064; bf16 compute,
fp32 parameters and AdamW state, rematerialised layers) for a mesh of
`--devices` CPU devices (faked with XLA's host device count), from abstract
arrays only: no parameter is ever allocated. XLA's memory analysis then gives
the bytes each device needs (arguments = sharded params + optimizer state +
batch, temporaries = activations, gathered weights and gradients), so an
out-of-memory shows up before a pod is booked. The full 28 layers compile in
about a minute on 2 CPU cores, using under 2 GiB of host memory.

The numbers are XLA:CPU's layout of the program; a TPU or GPU compiler lays
it out differently, e.g. XLA:CPU runs bf16 collectives in f32 (weights are
all-gathered at twice their bf16 size) and all-reduces gradients whole
instead of reduce-scattering them. By default XLA:CPU also undoes remat
(see `COMPILER_OPTIONS`, which this script sets): without that option the
defaults give 116 GiB of temporaries per device with or without `--remat 0`;
with it, 29 GiB with remat and 116 GiB without. Of the 29 GiB, about 24 are a
CPU scheduling artefact: XLA:CPU issues every layer's forward weight
all-gather at the top of the program, so all layers' full fp32 weights (0.87
GiB per layer) are live at once, and the temporaries grow by that much per
layer. (Tying each layer's weights to its input with an optimization barrier,
not done here, brings them to 6 GiB.) With `--scan 1` the layers are stacked
and run in a scan (`model.scan_layers`), which gathers one layer's weights at a
time: about 7 GiB of temporaries. Prints one JSON line.

    python benchmarks/compile_check.py                    # 64 devices, fsdp over all
    python benchmarks/compile_check.py --devices 16 --batch 16 --layers 4
    python benchmarks/compile_check.py --scan 1           # stacked, scanned layers
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

# XLA:CPU expands the optimization barriers that `jax.checkpoint` leaves
# around each rematerialised layer before layout assignment (pass
# "cse_barrier_expander"); its later CSE then merges the recomputed forward
# back into the original one, so with default options remat changes nothing on
# CPU and the temporaries hold every layer's activations. XLA:GPU expands them
# only after scheduling (TPU, where remat is known to work, likewise keeps
# them), so keep them here too.
COMPILER_OPTIONS = {"xla_disable_hlo_passes": "cse_barrier_expander"}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--devices", type=int, default=64)
  parser.add_argument("--data", type=int, default=1)
  parser.add_argument("--fsdp", type=int, default=-1)
  parser.add_argument("--tensor", type=int, default=1)
  parser.add_argument("--batch", type=int, default=64,
                      help="global pairs per step (divisible by data x fsdp)")
  parser.add_argument("--length", type=int, default=2048)
  parser.add_argument("--layers", type=int, default=28)
  parser.add_argument("--remat", type=int, default=1)
  parser.add_argument("--scan", type=int, default=0,
                      help="1: stacked layers run with nnx.scan (model.scan_layers)")
  parser.add_argument("--hbm_gib", type=float, default=16.0, help="per-device memory to compare")
  args = parser.parse_args()
  if "jax" in sys.modules:
    raise RuntimeError("run as a script: the device count must be set before jax is imported")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={args.devices}")
  os.environ["JAX_PLATFORMS"] = "cpu"

  import jax
  import jax.numpy as jnp
  from flax import nnx

  from omni_rrm_jax.models.architectures import get_architecture
  from omni_rrm_jax.models.factory import hf_config_for
  from omni_rrm_jax.sharding.mesh import make_mesh
  from omni_rrm_jax.sharding.rules import DEFAULT_RULES, spec_for
  from omni_rrm_jax.train.optimizer import make_optimizer
  from omni_rrm_jax.train.state import abstract_train_state
  from omni_rrm_jax.train.step import make_train_step
  from omni_rrm_jax.train.task_kind import RM

  name = "Qwen2ForSequenceClassification"
  hf = hf_config_for(name, dict(
      vocab_size=152064, hidden_size=3584, intermediate_size=18944,
      num_hidden_layers=args.layers, num_attention_heads=28, num_key_value_heads=4,
      max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=False,
      num_labels=1, pad_token_id=151643))
  arch = get_architecture(name)
  cfg = arch.make_config(hf, dtype="bfloat16", param_dtype="float32", remat=bool(args.remat),
                         scan_layers=bool(args.scan))
  mesh = make_mesh({"data": args.data, "fsdp": args.fsdp, "tensor": args.tensor})
  model = nnx.eval_shape(lambda: arch.module(cfg, rngs=nnx.Rngs(0)))
  tx, schedule = make_optimizer(dict(learning_rate=2e-6, warmup_steps=10, weight_decay=0.0),
                                total_steps=1000)
  graphdef, state = abstract_train_state(model, tx, mesh=mesh, rules=DEFAULT_RULES)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  step = make_train_step(graphdef, tx, RM, mesh=mesh, schedule=schedule)
  batch_sharding = jax.sharding.NamedSharding(
      mesh, spec_for(("batch", "length"), DEFAULT_RULES, (args.batch, args.length), mesh))
  tokens = jax.ShapeDtypeStruct((args.batch, args.length), jnp.int32, sharding=batch_sharding)
  batch = {k: tokens for k in ("chosen_input_ids", "chosen_attention_mask",
                               "rejected_input_ids", "rejected_attention_mask")}
  start = time.perf_counter()
  lowered = step.lower(state, batch)
  lower_s = time.perf_counter() - start
  compiled = lowered.compile(compiler_options=COMPILER_OPTIONS)
  compile_s = time.perf_counter() - start - lower_s
  mem = compiled.memory_analysis()
  per_device = {k: getattr(mem, k, None) for k in (
      "argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
      "alias_size_in_bytes", "generated_code_size_in_bytes")}
  peak = (per_device["argument_size_in_bytes"] or 0) + (per_device["output_size_in_bytes"] or 0) \
      + (per_device["temp_size_in_bytes"] or 0) - (per_device["alias_size_in_bytes"] or 0)
  gib = lambda key: round((per_device[key] or 0) / 2**30, 2)  # noqa: E731
  print(json.dumps({
      "benchmark": "compile_check", "model": "Qwen2.5-7B-shaped RM", "n_params": int(n_params),
      "layers": args.layers, "mesh": dict(mesh.shape), "batch_pairs": args.batch,
      "length": args.length, "remat": bool(args.remat),
      "scan_layers": bool(args.scan), "backend": "cpu (faked devices)",
      "lower_s": round(lower_s, 1), "compile_s": round(compile_s, 1),
      "bytes_per_device": per_device,
      "gib_per_device": {"arguments": gib("argument_size_in_bytes"),
                         "temporaries": gib("temp_size_in_bytes"),
                         "outputs_not_aliased": round(
                             ((per_device["output_size_in_bytes"] or 0)
                              - (per_device["alias_size_in_bytes"] or 0)) / 2**30, 2)},
      "peak_gib_per_device": round(peak / 2**30, 2),
      "fits_hbm_gib": args.hbm_gib, "fits": peak / 2**30 <= args.hbm_gib,
      "host_peak_rss_gib": round(
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))


if __name__ == "__main__":
  main()
