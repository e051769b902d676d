"""GRPO: a rubric judge (recipe a) or a policy (recipe b) trained on sampled rewards.

Variants:
  tiny       CPU, ~5 minutes (40 steps of 8 prompts x 8 samples): recipe a, stage 2
             after the tiny judge SFT, rewarded by format + agreement with the label +
             rubric coverage. Pass the SFT's own tokenizer folder: its `hf` export
             loads as a Qwen2Tokenizer, which splits digits differently.
               omni-rrm --config=configs/sft.py:tiny --workdir=/tmp/sft_tiny \
                   --config.train.num_steps=1000
               omni-rrm --config=configs/grpo.py:tiny --workdir=/tmp/grpo_tiny \
                   --config.model.path=/tmp/sft_tiny/hf --config.tokenizer=/tmp/sft_tiny/tokenizer
             Expected (measured from a 1000-step SFT judge, 32 held-out prompts x 8
             samples, before the tiny data became the omni generator's colour task
             with its rationale template; not re-measured since): total reward 0.122 -> 0.206, judge_format 0.769 -> 0.804,
             judge_content -0.616 -> -0.454, judge_rubric 0.305 -> 0.329, parse
             failures 0.59 -> 0.25; ~5 minutes on a loaded 2-core CPU. From the default
             300-step SFT judge format starts at ~0 and GRPO only learns to emit a short
             JSON object for 1/6 partial credit (completions 140 -> 29 tokens).
             The GRPO test (tests/rl/test_grpo_loop.py) runs this variant with
             judge_format alone on a judge SFT'd on short judgments (prompt 44 tokens,
             56 new): held-out judge_format 0.633 -> 0.794 in 40 steps.
  judge      1 GPU (24+ GB) or TPU v5e-8, hours: recipe a, stage 2 after judge SFT.
               omni-rrm --config=configs/grpo.py:judge --workdir=RUN \
                   --config.model.path=<sft workdir>/hf --config.data.train_path=train.jsonl
             Expected: not measured yet; held-out judge_format and judge_content
             (logged under eval/) should rise over the SFT judge's.
  policy     1 GPU or TPU v5e-8, hours: recipe b, a policy answering in
             <think>..</think><answer>..</answer>, rewarded by format and overlap with
             the better response, optionally plus a scalar RM of ours:
               omni-rrm --config=configs/grpo.py:policy --workdir=RUN \
                   --config.model.path=/path/to/Qwen2.5-1.5B-Instruct \
                   --config.data.train_path=train.jsonl \
                   --config.reward.model_path=<rm workdir>/hf
             Expected: not measured yet.
  judge_7b   TPU v5p-32 / v5e-64 (or 8x H100), about a day: recipe a on a 7B judge SFT
             (Qwen2.5-7B-Instruct), FSDP, bf16 compute, DAPO loss with clip-higher,
             overlong shaping and truncation masking (add dynamic sampling with
             --config.shaping.dynamic_sampling=True: groups are filtered over all
             processes' rollouts).
               omni-rrm --config=configs/grpo.py:judge_7b --workdir=gs://BUCKET/grpo7b \
                   --config.model.path=gs://BUCKET/judge7b/hf --config.data.train_path=...
             Expected: not measured yet; valid-JSON rate and pairwise accuracy
             (configs/eval.py) should rise over the SFT judge.
  policy_7b  the same pod, recipe b on a 7B policy (optionally with a 7B scalar RM).
  omni7b     the same pod, hours: the released omni judge's GRPO stage after
             configs/sft.py:omni7b: the rank-8, alpha-32 LoRA on the Qwen2.5-Omni-7B
             thinker's text decoder, lr 1e-5 for 1 epoch, 2 generations per prompt,
             up to 2,048 prompt and 1,024 completion tokens, KL to the base with the
             adapters off (no second copy of the weights).
               omni-rrm --config=configs/grpo.py:omni7b --workdir=gs://BUCKET/omni_grpo \
                   --config.model.path=gs://BUCKET/omni_judge/hf \
                   --config.data.train_path=prompts.jsonl --config.data.media_root=MEDIA
             Expected memory per device (benchmarks/compile_check.py --model omni7b
             --task grpo --lora 8 --preset v5e-16, one row a device): 12.9 GiB of a
             v5e chip's 16 for the update; the sampler's cache comes on top.
  omni3b     the same recipe on Qwen2.5-Omni-3B (set model.path to it).

Multimodal judges and policies: every variant takes a Qwen2.5-VL or Qwen2.5-Omni
thinker (`model.path` to its export, or `model.architecture` for a random init)
and samples image, video and audio records with their media; the `media` section,
`model.vision` and `model.audio` mean what they mean for configs/sft.py. Records whose media fail are skipped and
counted (`skipped_prompts` in summary.json). A CPU smoke run (about a minute;
a random judge, so rewards stay flat):
  omni-rrm --config=configs/grpo.py:tiny --workdir=/tmp/grpo_vl \
      --config.model.architecture=Qwen2_5_VLForConditionalGeneration \
      --config.data.synthetic_kinds=image,video,colour --config.train.num_steps=2 \
      --config.optim.warmup_steps=0 --config.rollout.max_new_tokens=8

Any leaf can be overridden with --config.a.b=value; unknown keys are errors.
"""

import ml_collections

from omni_rrm_jax.config.tasks import grpo_config

VARIANTS = ("tiny", "judge", "policy", "judge_7b", "policy_7b", "omni7b", "omni3b")


def _pod(c: ml_collections.ConfigDict) -> None:
  c.model.dtype = "bfloat16"
  c.model.remat = True
  c.model.scan_layers = True
  c.data.worker_count = 4
  c.mesh.update(data=1, fsdp=-1, tensor=1)
  c.train.num_steps = 500
  c.checkpoint.every = 25
  c.eval.num_prompts = 256
  c.train.eval_every = 50


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  recipe = "policy" if arg.startswith("policy") else "judge"
  c = grpo_config(recipe)
  if arg == "tiny":
    c.data.train_path = "synthetic"
    # configs/sft.py:tiny's judge prompts are 319-340 tokens, its judgments 136-143.
    c.reward.functions = "judge_format:0.4,judge_content:0.4,judge_rubric:0.2"
    c.data.max_prompt_length = 352
    c.data.prompt_bucket = 352
    c.rollout.max_new_tokens = 176
    c.rollout.prompts_per_step = 8
    c.rollout.num_generations = 8
    # A 2-layer model takes big steps; Adam's first ones move every weight by ~lr.
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 10
    c.train.num_steps = 40
    c.checkpoint.every = 10
    c.eval.num_prompts = 32
    return c
  if arg in ("judge", "judge_7b"):
    c.reward.functions = "judge_format:0.4,judge_content:0.4,judge_rubric:0.2"
  if arg in ("judge", "policy"):
    c.data.max_prompt_length = 2048
    c.data.prompt_bucket = 256
    c.rollout.max_new_tokens = 1024 if recipe == "judge" else 512
    c.rollout.prompts_per_step = 16
    c.rollout.num_generations = 8
    c.grpo.beta = 0.04
    c.grpo.num_minibatches = 4
    c.optim.learning_rate = 1e-6
    c.model.dtype = "bfloat16"
    c.model.remat = True
    c.train.num_steps = 300
    c.checkpoint.every = 25
    c.eval.num_prompts = 128
    c.train.eval_every = 50
    return c
  if arg in ("omni7b", "omni3b"):
    # The released omni judge's GRPO: the same LoRA, lr 1e-5, 2 generations per
    # prompt, up to 1,024 completion tokens; the KL reference is the base with
    # the adapters off (no second copy of the weights).
    _pod(c)
    c.model.architecture = "Qwen2_5OmniThinkerForConditionalGeneration"
    c.lora.update(rank=8, alpha=32.0)
    c.model.frozen_dtype = "bfloat16"  # the frozen base in the compute dtype
    c.reward.functions = "judge_format:0.4,judge_content:0.4,judge_rubric:0.2"
    c.data.max_prompt_length = 2048
    c.data.prompt_bucket = 512
    c.rollout.max_new_tokens = 1024
    c.rollout.prompts_per_step = 64
    c.rollout.num_generations = 2
    c.grpo.beta = 0.04
    c.grpo.num_minibatches = 4
    c.optim.learning_rate = 1e-5
    c.train.num_steps = 1000  # 1 epoch of 64,000 prompts; set records / prompts_per_step
    return c
  if arg in ("judge_7b", "policy_7b"):
    _pod(c)
    c.data.max_prompt_length = 4096
    c.data.prompt_bucket = 512
    c.rollout.max_new_tokens = 1024
    c.rollout.prompts_per_step = 64
    c.rollout.num_generations = 8
    c.grpo.loss_type = "dapo"
    c.grpo.epsilon_high = 0.28
    c.grpo.num_minibatches = 4
    c.shaping.overlong_penalty = True
    c.shaping.overlong_cache = 256
    c.shaping.mask_truncated = True
    c.reward.model_batch_size = 64
    c.reward.model_max_length = 4096
    c.optim.learning_rate = 1e-6
    return c
  raise ValueError(f"unknown variant {arg!r} of configs/grpo.py; choose {', '.join(VARIANTS)}")
