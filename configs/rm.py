"""Scalar (Bradley-Terry) reward model training.

Variants:
  tiny  CPU, ~2 minutes: a 2-layer Qwen2 RM from scratch with a BPE tokenizer
        trained on generated colour-fact pairs (written into the workdir).
        Expected: held-out pairwise accuracy >= 0.9 by step 300.
          omni-rrm --config=configs/rm.py:tiny --workdir=/tmp/rm_tiny
  7b    TPU v5e-64 / v5p-32 (or 8x H100), hours: a Qwen2.5-7B-Instruct checkpoint
        loaded as Qwen2ForSequenceClassification with a fresh score head,
        FSDP over all chips, bf16 compute with fp32 master weights.
          omni-rrm --config=configs/rm.py:7b --workdir=gs://BUCKET/rm7b \
              --config.model.path=/path/to/Qwen2.5-7B-Instruct \
              --config.data.train_path=train.jsonl --config.data.eval_path=eval.jsonl
        Expected: accuracy of a strong open 7B RM on its held-out split.

Any leaf can be overridden with --config.a.b=value; unknown keys are errors.
"""

import ml_collections

from omni_rrm_jax.sharding.config import mesh_config
from omni_rrm_jax.train.defaults import base_config


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base_config("rm")
  if arg == "tiny":
    return c
  if arg == "7b":
    c.model.path = ""  # must be set on the command line
    c.model.dtype = "bfloat16"
    c.model.remat = True
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
    c.train.checkpoint_every = 250
    c.mesh = mesh_config(data=1, fsdp=-1, tensor=1)
    return c
  raise ValueError(f"unknown variant {arg!r} of configs/rm.py; choose tiny or 7b")
