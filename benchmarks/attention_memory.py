"""Temporaries of one attention's loss + gradient, per attention implementation.

Compiles (never runs) a jitted loss and gradient of `dot_product_attention`
over abstract bf16 queries, keys and values of one Qwen2.5-7B layer
(28 query heads over 4 key/value heads, head size 128) at B rows of T tokens,
with the decoder's causal + key-padding mask, and prints XLA's
`temp_size_in_bytes` for each implementation as one JSON line. The numbers are
XLA:CPU's; "flash" is the Pallas kernel in interpret mode (its tiles are JAX
ops in loops, which is what XLA:CPU sees; on TPU Mosaic compiles the kernel).

    python benchmarks/attention_memory.py                      # B=1, T=3072
    python benchmarks/attention_memory.py --length 1024 --impl reference xla
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--length", type=int, default=3072)
  parser.add_argument("--heads", type=int, default=28)
  parser.add_argument("--kv_heads", type=int, default=4)
  parser.add_argument("--head_dim", type=int, default=128)
  parser.add_argument("--impl", nargs="+", default=["reference", "xla", "flash", "blockwise"])
  args = parser.parse_args()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

  import jax
  import jax.numpy as jnp

  from omni_rrm_jax.models.attention import causal_mask, dot_product_attention

  b, t = args.batch, args.length
  q = jax.ShapeDtypeStruct((b, t, args.heads, args.head_dim), jnp.bfloat16)
  kv = jax.ShapeDtypeStruct((b, t, args.kv_heads, args.head_dim), jnp.bfloat16)
  valid = jax.ShapeDtypeStruct((b, t), jnp.bool_)
  scale = args.head_dim ** -0.5
  results = {}
  for impl in args.impl:
    def loss(q_bthd, k_bskd, v_bskd, valid_bt, impl=impl):
      index_t = jnp.arange(t)
      mask = causal_mask(index_t, index_t, valid_bt)
      out = dot_product_attention(q_bthd, k_bskd, v_bskd, mask, scale, impl)
      return jnp.sum(jnp.square(out.astype(jnp.float32)))

    start = time.perf_counter()
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, kv, kv, valid).compile()
    mem = compiled.memory_analysis()
    results[impl] = {"temp_bytes": int(mem.temp_size_in_bytes),
                     "temp_mib": round(mem.temp_size_in_bytes / 2**20, 1),
                     "compile_s": round(time.perf_counter() - start, 1)}
  logits_mib = b * args.heads * t * t * 4 / 2**20
  print(json.dumps({"benchmark": "attention_memory", "backend": jax.default_backend(),
                    "batch": b, "length": t, "heads": args.heads, "kv_heads": args.kv_heads,
                    "head_dim": args.head_dim, "dtype": "bfloat16",
                    "fp32_logits_mib_per_copy": round(logits_mib, 1), "results": results}))


if __name__ == "__main__":
  main()
