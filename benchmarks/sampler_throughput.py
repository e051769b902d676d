"""Generated tokens per second: our jitted sampler vs transformers' `generate`.

Both run greedy decoding of the same random Qwen2 causal LM (built with
transformers + torch, saved, loaded with `omni_rrm_jax.from_pretrained`) on the
same prompts, for the same number of new tokens, with no EOS so every row
generates exactly `--new_tokens`. With `--num_samples G` (GRPO's group size)
both sample G completions of every prompt at `--temperature` (1.0 unless given)
without top-k / top-p: ours with `SamplingParams(num_samples=G)`, transformers
with `generate(do_sample=True, num_return_sequences=G)`. Each side is warmed
up first; our compile time and transformers' first-call time are reported
separately and excluded from the throughput. Then `--repeats` rounds each
time one call of transformers and one of ours, with a pause before each call
so that neither library's idle worker threads still spin while the other
runs; each side reports the median over the rounds. Prints one JSON line; `ratio` is our
tokens/s over transformers' tokens/s (`ratio_best_rounds` compares each
side's fastest round, less sensitive to other processes on a shared
machine); `load_avg` tells how busy the machine was.

Cores. PyTorch runs its matrix products on all the machine's cores (its
intra-op threads). XLA:CPU runs a decode step's small products ([B, hidden]
rows) on one thread, so by default ours runs on `--devices` CPU devices, one
per core (`--xla_force_host_platform_device_count`, set before JAX starts),
with the batch's rows split over them (a `data` mesh, the weights replicated):
the same cores on both sides. `--devices 1` is the single-device number; the
JSON says which (`ours_devices`). The tokens are the same either way.

    python benchmarks/sampler_throughput.py                  # ~20-60 s on 2 CPU cores
    python benchmarks/sampler_throughput.py --num_samples 8  # 8 samples per prompt
    python benchmarks/sampler_throughput.py --devices 1      # ours on one CPU device
    python benchmarks/sampler_throughput.py --hidden 1024 --layers 8 --batch 32 \
        --prompt_len 256 --new_tokens 256
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

from omni_rrm_jax.core.huge_pages import huge_pages_asked

PAUSE_S = 0.5  # lets OpenMP / Eigen worker threads stop spinning between sides


def build_model(folder: str, args) -> None:
  import torch
  import transformers
  torch.manual_seed(0)
  config = transformers.Qwen2Config(
      vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 3,
      num_hidden_layers=args.layers, num_attention_heads=args.heads,
      num_key_value_heads=args.kv_heads, max_position_embeddings=4096,
      tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
  model = transformers.Qwen2ForCausalLM(config).eval()
  with torch.no_grad():
    # A wider logit spread than the 0.02 init gives, so greedy is decided by
    # the model rather than by near-ties (and both sides can be compared).
    model.lm_head.weight.mul_(20.0)
  model.save_pretrained(folder)


def timed(fn) -> tuple[float, object]:
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt_len", type=int, default=64)
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--hidden", type=int, default=256)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--kv_heads", type=int, default=2)
  parser.add_argument("--vocab", type=int, default=4096)
  parser.add_argument("--repeats", type=int, default=5,
                      help="interleaved rounds, one timed call per side each (median)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--devices", type=int, default=os.cpu_count() or 1,
                      help="CPU devices ours splits the rows over (default: one per core)")
  parser.add_argument("--num_samples", type=int, default=1,
                      help="completions per prompt (G); above 1 both sides sample")
  parser.add_argument("--temperature", type=float, default=None,
                      help="sampling temperature (default: greedy for G=1, 1.0 for G>1)")
  args = parser.parse_args()
  if args.num_samples < 1:
    parser.error("--num_samples must be >= 1")
  if args.temperature is None:
    args.temperature = 0.0 if args.num_samples == 1 else 1.0
  if args.num_samples > 1 and args.temperature <= 0:
    parser.error("--num_samples > 1 samples: give a --temperature > 0")
  greedy = args.temperature == 0
  # One CPU device per core unless XLA_FLAGS already asks for a count; JAX reads
  # the flag when it starts, so it is imported only now.
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}"
  import jax

  import torch
  import transformers

  import omni_rrm_jax as orj
  from omni_rrm_jax.sampling.params import SamplingParams
  from omni_rrm_jax.sampling.sampler import generate
  from omni_rrm_jax.sharding.mesh import make_mesh

  folder = tempfile.mkdtemp(prefix="sampler_bench_")
  build_model(folder, args)
  rng = np.random.default_rng(0)
  ids_bt = rng.integers(3, args.vocab, size=(args.batch, args.prompt_len), dtype=np.int32)
  mask_bt = np.ones_like(ids_bt)
  generated = args.batch * args.num_samples * args.new_tokens

  # transformers: same model folder, same decoding, never stopping early.
  torch_dtype = torch.float32 if args.dtype == "float32" else torch.bfloat16
  hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).eval()
  hf.generation_config.eos_token_id = None
  ids_t, mask_t = torch.tensor(ids_bt).long(), torch.tensor(mask_bt).long()

  if greedy:
    decoding = dict(do_sample=False)
  else:
    decoding = dict(do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0,
                    num_return_sequences=args.num_samples)

  def theirs():
    with torch.no_grad():
      return hf.generate(ids_t, attention_mask=mask_t, max_new_tokens=args.new_tokens,
                         min_new_tokens=args.new_tokens, pad_token_id=0, **decoding)

  # Ours: the first call compiles; later calls reuse the cached program.
  # The rows split over as many devices as divide the batch (at most --devices).
  devices = max(d for d in range(1, min(args.devices, jax.device_count()) + 1)
                if args.batch % d == 0)
  mesh = (make_mesh({"data": devices, "fsdp": 1, "tensor": 1}, jax.devices()[:devices])
          if devices > 1 else None)
  model = orj.from_pretrained(folder, dtype=args.dtype, mesh=mesh)
  params = SamplingParams(temperature=args.temperature, max_new_tokens=args.new_tokens,
                          num_samples=args.num_samples)

  def ours():
    return jax.block_until_ready(generate(model, ids_bt, mask_bt, params, 0, eos_ids=(),
                                          mesh=mesh))

  hf_first, hf_out = timed(theirs)
  ours_first, ours_out = timed(ours)
  hf_times, ours_times = [], []
  for _ in range(args.repeats):
    for fn, times in ((theirs, hf_times), (ours, ours_times)):
      time.sleep(PAUSE_S)
      times.append(timed(fn)[0])

  ours_s, hf_s = statistics.median(ours_times), statistics.median(hf_times)
  assert hf_out.shape == (args.batch * args.num_samples, args.prompt_len + args.new_tokens)
  if greedy:
    same = np.asarray(ours_out.tokens_bn) == hf_out[:, args.prompt_len:].numpy()
    agreement = round(float(same.mean()), 4)
  else:
    agreement = None  # independent draws: nothing to compare token by token
  print(json.dumps({
      "benchmark": "sampler_throughput",
      "batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
      "num_samples": args.num_samples, "temperature": args.temperature,
      "model": {"hidden": args.hidden, "layers": args.layers, "heads": args.heads,
                "kv_heads": args.kv_heads, "vocab": args.vocab, "dtype": args.dtype},
      "backend": jax.default_backend(), "cpu_count": os.cpu_count(), "ours_devices": devices,
      "ours_tokens_per_s": round(generated / ours_s, 1),
      "transformers_tokens_per_s": round(generated / hf_s, 1),
      "ratio": round(hf_s / ours_s, 2),
      "ratio_best_rounds": round(min(hf_times) / min(ours_times), 2),
      "rounds": args.repeats,
      "ours_s_per_round": [round(t, 3) for t in ours_times],
      "transformers_s_per_round": [round(t, 3) for t in hf_times],
      "ours_compile_s": round(ours_first - ours_s, 2),
      "transformers_first_call_s": round(hf_first, 2),
      "greedy_token_agreement": agreement,
      "load_avg": round(os.getloadavg()[0], 2),
      "huge_pages": huge_pages_asked(),
  }))


if __name__ == "__main__":
  # Both sides with glibc's default allocator unless OMNI_RRM_HUGE_PAGES=1
  # (core/huge_pages.py: huge pages measured the two libraries' interplay).
  from omni_rrm_jax.core.huge_pages import reexec_with_huge_pages
  reexec_with_huge_pages(default=False)
  main()
