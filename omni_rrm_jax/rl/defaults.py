"""Default settings of the GRPO task; `configs/grpo.py` starts here and sets a variant.

Sections: `model` (the policy), `data` (where prompts come from and how they are
built), `rollout` (sampling), `reward` (rule rewards by name and an optional
scalar reward model), `grpo` (advantages, loss, optimisation passes), `shaping`
(DAPO's switches), `optim`, `train`, `eval`, `export`, `mesh`, `rules`.
"""

from __future__ import annotations

import ml_collections

from omni_rrm_jax.sharding.config import mesh_config, rules_config
from omni_rrm_jax.train import defaults as train_defaults

RECIPES = ("judge", "policy")


def base_config(recipe: str = "judge") -> ml_collections.ConfigDict:
  """The tiny CPU defaults of `recipe` ("judge": a rubric judge; "policy": a policy)."""
  if recipe not in RECIPES:
    raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
  # The multimodal settings (towers built from scratch, media buckets and
  # preprocessing) are the training tasks' own, so a judge SFT'd there samples
  # its media here exactly as it was trained on them.
  shared = train_defaults.base_config("sft")
  c = ml_collections.ConfigDict()
  c.task = "grpo"
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.architecture = "Qwen2ForCausalLM"
  c.model.path = ""  # a Hugging Face folder (e.g. a judge SFT's WORKDIR/hf); empty: random init
  c.model.config = ml_collections.ConfigDict(dict(
      hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True))
  # Towers of a multimodal policy (Qwen2_5_VLForConditionalGeneration,
  # Qwen2_5OmniThinkerForConditionalGeneration) built from scratch; ignored by
  # text architectures and by checkpoints. See train/defaults.py.
  c.model.vision = shared.model.vision
  c.model.audio = shared.model.audio
  c.model.dtype = "float32"
  c.model.param_dtype = "float32"
  c.model.remat = False

  c.tokenizer = ""  # a tokenizer folder; empty: model.path's, or trained on the data

  c.data = ml_collections.ConfigDict()
  # "judge": each record becomes the judge prompt (both responses shown) and the
  # rewards see its label / teacher scores; "policy": the record's prompt alone
  # as a chat turn, the better response as the `reference` column.
  c.data.recipe = recipe
  c.data.train_path = ""  # empty: generate synthetic pairs into the workdir
  c.data.train_format = "auto"
  c.data.eval_path = ""
  c.data.eval_format = "auto"
  c.data.synthetic_kinds = "colour"
  c.data.synthetic_train = 2000
  c.data.synthetic_eval = 64
  c.data.media_root = ""
  c.data.strict = False
  c.data.max_record_bytes = 4 * 2**20  # a longer row is skipped ("record too large"); 0: no limit
  c.data.eval_limit = 0
  c.data.seed = 0
  c.data.max_prompt_length = 512  # prompt content is cut from the left beyond this
  c.data.prompt_bucket = 64  # prompts are left-padded to a multiple of this
  c.data.worker_count = 0
  # Media of a multimodal policy (see train/defaults.py): patches (audio frames)
  # per prompt are padded to one of these buckets, the largest caps a prompt's
  # media, and `media` overrides the preprocessing.
  c.data.patch_buckets = shared.data.patch_buckets
  c.data.audio_frame_buckets = shared.data.audio_frame_buckets
  c.data.media = shared.data.media

  c.rollout = ml_collections.ConfigDict(dict(
      prompts_per_step=4,  # global, across processes
      num_generations=4,  # G, completions per prompt
      max_new_tokens=256, temperature=1.0, top_k=0, top_p=1.0))

  c.reward = ml_collections.ConfigDict(dict(
      # "name:weight,name:weight" over `omni_rrm_jax.rewards.REWARDS`.
      functions=("judge_format:1.0" if recipe == "judge"
                 else "think_answer_format:0.2,answer_accuracy:0.8"),
      # A scalar RM folder (*ForSequenceClassification) scoring prompt+completion; a
      # multimodal one sees the prompt's media, decoded with `data.media_root`,
      # `data.media` and bucketed by `data.patch_buckets` / `data.audio_frame_buckets`
      # (set them as the RM was trained).
      model_path="",
      model_weight=1.0, model_batch_size=16, model_max_length=1024, model_bucket=128))

  c.grpo = ml_collections.ConfigDict(dict(
      advantage="grpo",  # rl.advantages.ADVANTAGE_ESTIMATORS
      loss_type="grpo",  # rl.losses.POLICY_LOSSES
      epsilon_low=0.2, epsilon_high=0.2,
      delta=0.0,  # dual-clip constant (> 1); 0 disables it
      beta=0.0,  # KL to the initial policy; > 0 keeps a frozen copy of it
      kl_estimator="k3",
      num_iterations=1,  # mu: optimisation passes over each rollout batch
      num_minibatches=1))  # optimizer updates per pass

  c.shaping = ml_collections.ConfigDict(dict(
      dynamic_sampling=False,  # drop zero-variance groups, refill from further prompts
      max_rounds=4,  # cap on rollout rounds per step when refilling
      overlong_penalty=False, overlong_cache=32,  # soft penalty over the last N tokens
      mask_truncated=False))  # completions that hit max_new_tokens leave the loss

  c.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-4, warmup_steps=0, end_lr_factor=1.0, weight_decay=0.0,
      b1=0.9, b2=0.99, eps=1e-8, grad_clip_norm=1.0))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=50, log_every=1, checkpoint_every=10, keep_checkpoints=2,
      max_nonfinite_streak=5, async_checkpoint=True, progress_bar=True))

  # Sampled completions of held-out prompts (fixed key), scored by the same
  # rewards, at the start, every `every` steps (0: never) and at the end.
  c.eval = ml_collections.ConfigDict(dict(num_prompts=16, every=0))

  c.export = ml_collections.ConfigDict(dict(at_end=True))

  c.mesh = mesh_config()
  c.rules = rules_config()
  return c
