"""Scalar (Bradley-Terry) reward model training.

Variants:
  tiny  CPU, ~2 minutes: a 2-layer Qwen2 RM from scratch with a BPE tokenizer
        trained on generated colour-fact pairs (the omni generator's text-colour
        task, written into the workdir).
        Expected: held-out pairwise accuracy >= 0.9 by step 300 (measured 0.975,
        60 s on a loaded 2-core CPU).
          omni-rrm --config=configs/rm.py:tiny --workdir=/tmp/rm_tiny
  tiny_vl  CPU, ~1.5 minutes: a 2-layer Qwen2.5-VL RM (2-block vision tower)
        from scratch on generated colour facts plus image and video colour
        pairs (a large square; the colour is only in the pixels).
        Expected: held-out pairwise accuracy ~0.85 at step 200 (measured
        0.84, 88 s on a loaded 2-core CPU).
          omni-rrm --config=configs/rm.py:tiny_vl --workdir=/tmp/rm_tiny_vl
  tiny_omni  CPU, ~5 minutes: a 2-layer Qwen2.5-Omni thinker RM (2-block
        vision and audio towers) from scratch on colour facts, image and video
        colour pairs and audio tone pairs (count, direction, pitch), one
        compilation per (length, patch, audio frame) bucket (2 here).
        Expected: held-out pairwise accuracy ~0.7 at step 200 (measured 0.73,
        301 s on a loaded 2-core CPU; images and pitch are learnt first, tone
        counting stays near chance at this size).
          omni-rrm --config=configs/rm.py:tiny_omni --workdir=/tmp/rm_tiny_omni
  7b    TPU v5e-64 / v5p-32 (or 8x H100), hours: a Qwen2.5-7B-Instruct checkpoint
        loaded as Qwen2ForSequenceClassification with a fresh score head,
        FSDP over all chips, bf16 compute with fp32 master weights.
          omni-rrm --config=configs/rm.py:7b --workdir=gs://BUCKET/rm7b \
              --config.model.path=/path/to/Qwen2.5-7B-Instruct \
              --config.data.train_path=train.jsonl --config.data.eval_path=eval.jsonl
        Expected: accuracy of a strong open 7B RM on its held-out split.
  omni7b  TPU v5e-16 or larger (or 8x H100), hours: the recipe of the
        released omni RM, a LoRA of rank 8, alpha 32 on every linear layer of
        the Qwen2.5-Omni-7B thinker's text decoder; the vision and audio towers
        and the rest of the base frozen (no gradients, no optimizer state, stored
        in bf16), the score head trained fully; layers scanned, 2,048 prompt +
        1,024 response tokens. Exports a merged model (WORKDIR/hf) and a PEFT
        adapter for the base (WORKDIR/hf_adapter).
          omni-rrm --config=configs/rm.py:omni7b --workdir=gs://BUCKET/omni_rm \
              --config.model.path=/path/to/Qwen2.5-Omni-7B \
              --config.data.train_path=train.jsonl --config.data.eval_path=eval.jsonl
        Expected: the 7b variant's accuracy range with ~0.3% of its optimizer
        state (161 MB instead of 57 GB for the decoder, benchmarks/lora_train_state.py);
        13.9 GiB per device with one pair a device on a v5e-16 (benchmarks/
        compile_check.py --model omni7b --task rm --lora 8 --preset v5e-16).
  omni3b  the same recipe on Qwen2.5-Omni-3B (set model.path to it).
  Any variant trains a LoRA with --config.lora.rank=R (and lora.alpha, lora.dropout,
  lora.targets); --config.model.freeze='("visual","audio_tower")' freezes modules
  in a full run.

Any leaf can be overridden with --config.a.b=value; unknown keys are errors.
"""

import ml_collections

from omni_rrm_jax.config.tasks import rm_config


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = rm_config()
  if arg.startswith("tiny"):
    c.data.train_path = "synthetic"
  if arg == "tiny":
    return c
  if arg in ("tiny_vl", "tiny_omni"):
    c.model.architecture = ("Qwen2_5_VLForConditionalGeneration" if arg == "tiny_vl"
                            else "Qwen2_5OmniThinkerForConditionalGeneration")
    c.data.synthetic_kinds = "colour,image,video" + (",audio" if arg == "tiny_omni" else "")
    c.data.synthetic_train = 800
    c.data.synthetic_eval = 64
    # Media tokens: <= 16 a 112 x 112 image or a 4-frame video, <= 50 a 2 s clip.
    c.data.max_length = 64 if arg == "tiny_vl" else 96
    c.data.buckets = (c.data.max_length,)
    c.media.patch_buckets = (0, 64)
    c.media.audio_frame_buckets = (0, 200)
    c.train.num_steps = 200
    c.train.eval_every = 100
    return c
  if arg in ("7b", "omni7b", "omni3b"):
    c.model.path = ""  # must be set on the command line
    c.model.dtype = "bfloat16"
    c.model.remat = True
    c.model.scan_layers = True  # one layer's weights gathered at a time; depth-free compile
    c.tokenizer = ""
    c.data.max_length = 4096
    c.data.buckets = (1024, 2048, 4096)
    c.data.batch_size = 128
    c.data.eval_batch_size = 128
    c.data.worker_count = 8
    c.optim.learning_rate = 2e-6
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.0
    c.train.num_steps = 2000
    c.train.log_every = 10
    c.train.eval_every = 250
    c.checkpoint.every = 250
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    if arg != "7b":
      c.model.architecture = "Qwen2_5OmniThinkerForConditionalGeneration"
      c.lora.update(rank=8, alpha=32.0)
      # The frozen base in the compute dtype: half the bytes, the same forward.
      c.model.frozen_dtype = "bfloat16"
      c.optim.learning_rate = 1e-4  # adapters train at LoRA's usual rate
      # The recipe's lengths: 2,048 prompt (with its media) + 1,024 response tokens.
      c.data.max_length = 3072
      c.data.buckets = (1024, 2048, 3072)
    return c
  raise ValueError(f"unknown variant {arg!r} of configs/rm.py; choose tiny, tiny_vl, tiny_omni, "
                   "7b, omni7b or omni3b")
