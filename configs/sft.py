"""Judge SFT: a causal LM learns to write the strict rubric judgment.

The loss is next-token cross-entropy on the judgment tokens only (the judge
prompt is masked), token-averaged.

Variants:
  tiny  CPU, ~3 minutes: a 2-layer Qwen2 LM from scratch on generated
        colour-fact pairs (the omni generator's text-colour task) with rubric
        rationales.
        Expected: eval token accuracy on judgment tokens ~0.93 at step 300
        (measured: 0.936; 6 minutes on a heavily loaded 2-core CPU).
          omni-rrm --config=configs/sft.py:tiny --workdir=/tmp/sft_tiny
  tiny_vl  CPU, ~3 minutes: a 2-layer Qwen2.5-VL judge from scratch on colour
        facts plus image and video colour pairs.
        Expected: eval token accuracy on judgment tokens ~0.87 at step 200
        (measured 0.873; 309 s on a heavily loaded 2-core CPU).
          omni-rrm --config=configs/sft.py:tiny_vl --workdir=/tmp/sft_tiny_vl
  tiny_omni  CPU, ~8 minutes: a 2-layer Qwen2.5-Omni thinker judge from
        scratch on colour facts, image and video colour pairs and audio tone
        pairs, one compilation per (length, patch, audio frame) bucket (5 of
        the 8 here).
        Expected: eval token accuracy on judgment tokens ~0.79 at step 200
        (measured 0.789, 472 s on a loaded 2-core CPU, before the tiny data
        became the omni generator's tasks; not re-measured since).
          omni-rrm --config=configs/sft.py:tiny_omni --workdir=/tmp/sft_tiny_omni
  omni7b  TPU v5e-64 / v5p-32 (or 8x H100), hours: the released omni judge's
        SFT, a LoRA of rank 8, alpha 32 on every linear layer of the
        Qwen2.5-Omni-7B thinker's text decoder (vision and audio towers frozen),
        lr 5e-6 for 2 epochs (set train.num_steps to 2 * records / 64).
          omni-rrm --config=configs/sft.py:omni7b --workdir=gs://BUCKET/omni_judge \
              --config.model.path=/path/to/Qwen2.5-Omni-7B \
              --config.data.train_path=judge_train.jsonl --config.data.media_root=MEDIA
        Expected memory per device (benchmarks/compile_check.py --model omni7b
        --task sft --lora 8 --preset v5e-16, one row a device): 13.3 GiB, under a v5e
        chip's 16; full fine-tuning needs 45.5 GiB a chip on a v5p-8.
  omni3b  the same recipe on Qwen2.5-Omni-3B (set model.path to it).
  7b    TPU v5e-64 / v5p-32, hours: Qwen2.5-7B-Instruct on judgment data with
        rationales.
          omni-rrm --config=configs/sft.py:7b --workdir=gs://BUCKET/judge7b \
              --config.model.path=/path/to/Qwen2.5-7B-Instruct \
              --config.data.train_path=judge_train.jsonl
"""

import ml_collections

from omni_rrm_jax.config.tasks import sft_config


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = sft_config()
  c.data.max_length = 576
  c.data.buckets = (512, 576)
  c.data.batch_size = 8
  c.data.eval_batch_size = 16
  c.data.synthetic_train = 1000
  c.data.synthetic_eval = 64
  if arg.startswith("tiny"):
    c.data.train_path = "synthetic"
  if arg == "tiny":
    return c
  if arg in ("tiny_vl", "tiny_omni"):
    c.model.architecture = ("Qwen2_5_VLForConditionalGeneration" if arg == "tiny_vl"
                            else "Qwen2_5OmniThinkerForConditionalGeneration")
    c.data.synthetic_kinds = "colour,image,video" + (",audio" if arg == "tiny_omni" else "")
    c.data.synthetic_train = 600
    c.data.synthetic_eval = 32
    c.media.patch_buckets = (0, 64)
    c.media.audio_frame_buckets = (0, 200)
    c.train.num_steps = 200
    c.train.eval_every = 100
    return c
  if arg in ("omni7b", "omni3b"):
    # The released omni judge's SFT: a rank-8, alpha-32 LoRA on every linear layer
    # of the Qwen2.5-Omni-7B thinker's text decoder, encoders frozen, lr 5e-6.
    c.model.architecture = "Qwen2_5OmniThinkerForConditionalGeneration"
    c.model.dtype = "bfloat16"
    c.model.remat = True
    c.model.scan_layers = True
    c.lora.update(rank=8, alpha=32.0)
    c.model.frozen_dtype = "bfloat16"  # the frozen base in the compute dtype
    c.data.max_length = 3072  # 2,048 prompt + 1,024 judgment tokens
    c.data.buckets = (1024, 2048, 3072)
    c.data.batch_size = 64
    c.data.worker_count = 8
    c.optim.learning_rate = 5e-6
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.0
    c.train.num_steps = 2000  # 2 epochs of 64,000 judgments; set 2 * records / batch_size
    c.train.eval_every = 250
    c.checkpoint.every = 250
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    return c
  if arg == "7b":
    c.model.dtype = "bfloat16"
    c.model.remat = True
    c.model.scan_layers = True
    c.data.max_length = 8192
    c.data.buckets = (2048, 4096, 8192)
    c.data.batch_size = 64
    c.data.worker_count = 8
    c.optim.learning_rate = 1e-5
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.0
    c.train.num_steps = 1500
    c.train.eval_every = 250
    c.checkpoint.every = 250
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    return c
  raise ValueError(f"unknown variant {arg!r} of configs/sft.py; choose tiny, tiny_vl, "
                   "tiny_omni, 7b, omni7b or omni3b")
