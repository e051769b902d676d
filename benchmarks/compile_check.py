"""Ahead-of-time check that a 7B-class train step fits a pod, on faked host devices.

Two models: the default, a Qwen2.5-7B-shaped text RM (below), and with
`--model omni7b` the Qwen2.5-Omni-7B thinker with its vision and audio towers,
whose RM, judge SFT (`--task sft`) or GRPO update (`--task grpo`) step is
compiled at the recipe's lengths (`--prompt` 2,048 + `--completion` 1,024, one
448 x 448 image and one 30 s clip per row), fully trained or as a LoRA
(`--lora 8`, towers frozen, frozen matrices in `--frozen_dtype` bfloat16), on a
slice's device count (`--preset v5e-16 | v5p-8 | h100x8`). The JSON also splits
each device's arguments into trained parameters, frozen parameters, optimizer
state and batch; the README's "Memory per device for the 7B omni recipe"
table comes from these runs.

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
    python benchmarks/compile_check.py --attention flash  # models/flash_attention.py
    python benchmarks/compile_check.py --scan 0           # layers as a list, unscanned
    python benchmarks/compile_check.py --model omni7b --task sft --lora 8 --preset v5e-16
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


PRESETS = {
    # name: (devices, HBM GiB per device). A v5p-8 slice is 4 chips (8 TensorCores,
    # two per chip, seen by JAX as one megacore device each).
    "v5e-16": (16, 16.0),
    "v5p-8": (4, 95.0),
    "h100x8": (8, 80.0),
}
# The released omni reward model's LoRA: rank 8, alpha 32, every linear layer of
# the text decoder; the vision and audio towers frozen.
LORA_ALPHA = 32.0
ENCODERS = ("visual", "audio_tower")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=("qwen2_7b", "omni7b"), default="qwen2_7b",
                      help="qwen2_7b: a Qwen2.5-7B-shaped text RM; omni7b: the "
                           "Qwen2.5-Omni-7B thinker with its vision and audio towers")
  parser.add_argument("--task", choices=("rm", "sft", "grpo"), default="rm")
  parser.add_argument("--preset", choices=tuple(PRESETS), default=None,
                      help="sets --devices and --hbm_gib for a slice; fsdp over all devices")
  parser.add_argument("--devices", type=int, default=64)
  parser.add_argument("--data", type=int, default=1)
  parser.add_argument("--fsdp", type=int, default=-1)
  parser.add_argument("--tensor", type=int, default=1)
  parser.add_argument("--batch", type=int, default=None,
                      help="global rows per step (pairs for rm; divisible by data x fsdp); "
                           "default 64 for qwen2_7b, one row per device for omni7b")
  parser.add_argument("--length", type=int, default=2048,
                      help="qwen2_7b: sequence length")
  parser.add_argument("--prompt", type=int, default=2048, help="omni7b: prompt tokens")
  parser.add_argument("--completion", type=int, default=1024,
                      help="omni7b: completion tokens (rm / sft rows hold prompt + completion)")
  parser.add_argument("--image", type=int, default=448,
                      help="omni7b: side in pixels of the one image per row (0: none)")
  parser.add_argument("--audio_seconds", type=int, default=30,
                      help="omni7b: seconds of the one audio clip per row (0: none)")
  parser.add_argument("--lora", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
  parser.add_argument("--train_encoders", type=int, default=0,
                      help="omni7b full fine-tuning: also train the vision and audio towers")
  parser.add_argument("--frozen_dtype", default="bfloat16",
                      help="storage dtype of frozen matrices (model.frozen_dtype; '' keeps fp32)")
  parser.add_argument("--logits_chunk", type=int, default=512,
                      help="sft / grpo: positions per vocabulary-head chunk (model.logits_chunk)")
  parser.add_argument("--beta", type=float, default=0.04, help="grpo: KL coefficient")
  parser.add_argument("--layers", type=int, default=28)
  parser.add_argument("--remat", type=int, default=1)
  parser.add_argument("--attention", default="reference",
                      help="model.attention: reference, xla, cudnn or flash")
  parser.add_argument("--scan", type=int, default=1,
                      help="1: stacked layers run in a scan (model.scan_layers); 0: a list")
  parser.add_argument("--hbm_gib", type=float, default=16.0, help="per-device memory to compare")
  args = parser.parse_args(argv)
  if args.preset:
    args.devices, args.hbm_gib = PRESETS[args.preset]
  if args.model == "qwen2_7b" and args.task != "rm":
    parser.error("--model qwen2_7b checks the rm step only; use --model omni7b for sft / grpo")
  if args.batch is None:
    args.batch = 64 if args.model == "qwen2_7b" else args.devices // max(args.tensor, 1)
  return args


def qwen2_7b(args):
  """(architecture name, model config) of the Qwen2.5-7B-shaped RM."""
  from omni_rrm_jax.models.architectures import get_architecture
  from omni_rrm_jax.models.factory import hf_config_for

  name = "Qwen2ForSequenceClassification"
  hf = hf_config_for(name, dict(
      vocab_size=152064, hidden_size=3584, intermediate_size=18944,
      num_hidden_layers=args.layers, num_attention_heads=28, num_key_value_heads=4,
      max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=False,
      num_labels=1, pad_token_id=151643))
  arch = get_architecture(name)
  return arch, arch.make_config(hf, dtype="bfloat16", param_dtype="float32",
                                remat=bool(args.remat), attention=args.attention,
                                scan_layers=bool(args.scan))


def omni7b(args):
  """(architecture, model config) of the Qwen2.5-Omni-7B thinker (RM: with a score head).

  transformers' `Qwen2_5OmniThinkerConfig` defaults are the 7B text decoder
  and audio tower; the vision tower's width is set to the released 1280.
  """
  import transformers

  from omni_rrm_jax.models.architectures import get_architecture
  from omni_rrm_jax.models.omni_config import ARCHITECTURE, CLASSIFIER_ARCHITECTURE

  hf = transformers.Qwen2_5OmniThinkerConfig(
      text_config={"num_hidden_layers": args.layers}, vision_config={"hidden_size": 1280})
  name = CLASSIFIER_ARCHITECTURE if args.task == "rm" else ARCHITECTURE
  if args.task == "rm":
    hf.num_labels, hf.pad_token_id = 1, 151643
  arch = get_architecture(name)
  return arch, arch.make_config(hf, dtype="bfloat16", param_dtype="float32",
                                remat=bool(args.remat), attention=args.attention,
                                scan_layers=bool(args.scan),
                                freeze_encoders=not args.train_encoders)


def omni_media_shapes(cfg, image: int, audio_seconds: int) -> dict[str, tuple[tuple, object]]:
  """Shapes and dtypes of one row's media keys (`models/media_inputs.py`): one
  `image` x `image` picture and one clip of `audio_seconds`, as collated."""
  import numpy as np

  host = cfg.host_inputs()
  v = cfg.vision
  side = image // v.patch_size if image else 0
  grid = np.asarray([[1, side, side]] if image else np.zeros((0, 3)), np.int64)
  layout = host.vision_layout(grid)
  n = len(layout["perm"])
  shapes = {"vision_patches": ((n, 3 * v.temporal_patch_size * v.patch_size ** 2), np.float32)}
  for field, arr in layout.items():
    shapes[f"vision_{field}"] = (arr.shape, np.int32)
  if audio_seconds:
    frames = 100 * audio_seconds  # log-mel frames at a 10 ms hop
    audio = host.audio_layout(frames)
    shapes["input_features"] = ((cfg.audio.num_mel_bins, frames), np.float32)
    shapes["feature_attention_mask"] = ((frames,), np.int32)
    for field, arr in audio.items():
      shapes[f"audio_{field}"] = (arr.shape, arr.dtype)
  tokens = n // v.spatial_merge_size ** 2 + (host.audio_tokens(100 * audio_seconds)
                                            if audio_seconds else 0)
  return shapes, tokens


def build(args, arch, cfg):
  """The abstract model, with LoRA when asked, and its trainable filter."""
  import types

  from flax import nnx

  from omni_rrm_jax.models.lora import LINEAR_LAYERS
  from omni_rrm_jax.train.trainable import prepare_trainable

  freeze = ENCODERS if args.model == "omni7b" and (args.lora or not args.train_encoders) else ()
  lora = types.SimpleNamespace(rank=args.lora, alpha=LORA_ALPHA, dropout=0.0,
                               targets=LINEAR_LAYERS)
  holder = {}

  def make():
    model = arch.module(cfg, rngs=nnx.Rngs(0))
    holder["trainable"] = prepare_trainable(model, lora, freeze)
    return model

  model = nnx.eval_shape(make)
  return model, holder["trainable"], freeze


def abstract_batch(args, cfg, mesh, rules):
  """The step's batch as sharded `ShapeDtypeStruct`s, and the sequence lengths."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from omni_rrm_jax.sharding.rules import spec_for

  b = args.batch

  def arr(shape, dtype):
    shape = (b, *shape)
    axes = ("batch",) + (None,) * (len(shape) - 1)
    sharding = jax.sharding.NamedSharding(mesh, spec_for(axes, rules, shape, mesh))
    return jax.ShapeDtypeStruct(shape, jnp.dtype(dtype), sharding=sharding)

  if args.model == "qwen2_7b":
    t = args.length
    return {k: arr((t,), np.int32) for k in ("chosen_input_ids", "chosen_attention_mask",
                                            "rejected_input_ids", "rejected_attention_mask")}, \
        dict(length=t)
  p, n = args.prompt, args.completion
  media, media_tokens = omni_media_shapes(cfg, args.image, args.audio_seconds)
  if media_tokens > p:
    raise SystemExit(f"the media's {media_tokens} tokens do not fit a {p}-token prompt")
  media_len = p if args.task == "grpo" else p + n
  batch = {k: arr(shape, dtype) for k, (shape, dtype) in media.items()}
  batch["position_ids"] = arr((3, media_len), np.int32)
  batch["media_index"] = arr((media_len,), np.int32)
  if args.task == "rm":
    batch.update({k: arr((p + n,), np.int32) for k in (
        "chosen_input_ids", "chosen_attention_mask", "rejected_input_ids",
        "rejected_attention_mask")})
  elif args.task == "sft":
    batch.update({k: arr((p + n,), np.int32) for k in ("input_ids", "attention_mask",
                                                       "loss_mask")})
  else:
    batch.update(prompt_ids=arr((p,), np.int32), prompt_mask=arr((p,), np.int32),
                 completion_ids=arr((n,), np.int32), completion_mask=arr((n,), np.int32),
                 loss_mask=arr((n,), np.int32), old_logp=arr((n,), np.float32),
                 adv=arr((), np.float32))
    if args.beta > 0:
      batch["ref_logp"] = arr((n,), np.float32)
  return batch, dict(prompt=p, completion=n, media_tokens=media_tokens)


def per_device_bytes(tree) -> int:
  """Bytes of one device's shards of a tree of sharded `ShapeDtypeStruct`s."""
  import jax
  import numpy as np

  total = 0
  for x in jax.tree.leaves(tree):
    if not hasattr(x, "shape"):
      continue
    shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) else x.shape
    total += int(np.prod(shape)) * np.dtype(x.dtype).itemsize
  return total


def main(argv=None):
  args = parse_args(argv)
  if "jax" in sys.modules:
    raise RuntimeError("run as a script: the device count must be set before jax is imported")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={args.devices}")
  os.environ["JAX_PLATFORMS"] = "cpu"

  import jax

  from omni_rrm_jax.rl.grpo_step import make_grpo_step
  from omni_rrm_jax.sharding.mesh import make_mesh
  from omni_rrm_jax.sharding.rules import DEFAULT_RULES
  from omni_rrm_jax.train.optimizer import make_optimizer
  from omni_rrm_jax.train.state import abstract_train_state
  from omni_rrm_jax.train.step import make_train_step
  from omni_rrm_jax.train.task_kind import RM, SFT

  arch, cfg = (qwen2_7b if args.model == "qwen2_7b" else omni7b)(args)
  mesh = make_mesh({"data": args.data, "fsdp": args.fsdp, "tensor": args.tensor})
  model, trainable, frozen_prefixes = build(args, arch, cfg)
  tx, schedule = make_optimizer(dict(learning_rate=2e-6, warmup_steps=10, weight_decay=0.0),
                                total_steps=1000)
  graphdef, state = abstract_train_state(model, tx, mesh=mesh, rules=DEFAULT_RULES,
                                         trainable=trainable,
                                         frozen_dtype=args.frozen_dtype or None)
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
  if args.task == "grpo":
    step = make_grpo_step(graphdef, tx, loss_type="grpo", beta=args.beta, on_policy=True,
                          mesh=mesh, schedule=schedule, logits_chunk=args.logits_chunk)
  else:
    step = make_train_step(graphdef, tx, RM if args.task == "rm" else SFT, mesh=mesh,
                           schedule=schedule, logits_chunk=args.logits_chunk)
  batch, lengths = abstract_batch(args, cfg, mesh, DEFAULT_RULES)
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
  gib = lambda n: round(n / 2**30, 2)  # noqa: E731
  print(json.dumps({
      "benchmark": "compile_check",
      "model": ("Qwen2.5-7B-shaped RM" if args.model == "qwen2_7b"
                else "Qwen2.5-Omni-7B thinker" + (" RM" if args.task == "rm" else "")),
      "task": args.task, "lora_rank": args.lora, "frozen": list(frozen_prefixes),
      "frozen_dtype": args.frozen_dtype or "float32",
      "preset": args.preset, "trained_params": int(count(state.params)),
      "frozen_params": int(count(state.frozen)),
      "layers": args.layers, "mesh": dict(mesh.shape), "batch_rows": args.batch, **lengths,
      "remat": bool(args.remat), "attention": args.attention,
      "scan_layers": bool(args.scan), "logits_chunk": args.logits_chunk,
      "backend": "cpu (faked devices)",
      "lower_s": round(lower_s, 1), "compile_s": round(compile_s, 1),
      "bytes_per_device": per_device,
      "gib_per_device": {
          "trained_params": gib(per_device_bytes(state.params)),
          "frozen_params": gib(per_device_bytes(state.frozen)),
          "optimizer_state": gib(per_device_bytes(state.opt_state)),
          "batch": gib(per_device_bytes(batch)),
          "arguments": gib(per_device["argument_size_in_bytes"] or 0),
          "temporaries": gib(per_device["temp_size_in_bytes"] or 0),
          "outputs_not_aliased": gib((per_device["output_size_in_bytes"] or 0)
                                     - (per_device["alias_size_in_bytes"] or 0))},
      "peak_gib_per_device": gib(peak),
      "fits_hbm_gib": args.hbm_gib, "fits": peak / 2**30 <= args.hbm_gib,
      "host_peak_rss_gib": round(
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))


if __name__ == "__main__":
  main()
