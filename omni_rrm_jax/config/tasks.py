"""Every task's config, composed from the sections of `config/sections.py`.

`configs/<task>.py:get_config(variant)` starts from one of these and sets values;
the main job (`demo/config.py`) holds one of each stage's and sets values too.
A task picks its sections and changes defaults; it never declares a leaf.
"""

from __future__ import annotations

from typing import Callable

import ml_collections

from omni_rrm_jax.config import sections as s

RECIPES = ("judge", "policy")  # GRPO: a rubric judge, or a policy answering prompts

# task -> section name -> the section builders joined into it.
TASK_SECTIONS: dict[str, dict[str, tuple[Callable[[], ml_collections.ConfigDict], ...]]] = {
    "rm": dict(model=(s.model,),
               data=(s.data_reader, s.data_sources, s.data_batches, s.data_train_batches),
               media=(s.media,), loss=(s.loss,), lora=(s.lora,), optim=(s.optim,),
               train=(s.train,),
               checkpoint=(s.checkpoint,), export=(s.export,), mesh=(s.mesh,),
               rules=(s.rules,)),
    "grpo": dict(model=(s.model,), data=(s.data_reader, s.data_sources, s.data_prompts),
                 media=(s.media,), rollout=(s.rollout,), reward=(s.reward,), grpo=(s.grpo,),
                 shaping=(s.shaping,), lora=(s.lora,), optim=(s.optim,), train=(s.train,),
                 checkpoint=(s.checkpoint,), eval=(s.rl_eval,), export=(s.export,),
                 mesh=(s.mesh,), rules=(s.rules,)),
    "eval": dict(model=(s.model_source,), data=(s.data_reader, s.data_file, s.data_batches),
                 media=(s.media,), judge=(s.judge,), report=(s.report,), mesh=(s.mesh,),
                 rules=(s.rules,)),
    "export": dict(mesh=(s.mesh,), rules=(s.rules,)),
    "construct": dict(construct=(s.construct,), data=(s.data_reader,)),
    "serve": dict(model=(s.model_source,), media=(s.media,), judge=(s.judge,),
                  serve=(s.serve,), mesh=(s.mesh,), rules=(s.rules,)),
}
TASK_SECTIONS["bon"] = TASK_SECTIONS["eval"]
TASK_SECTIONS["sft"] = {**TASK_SECTIONS["rm"],
                        "data": (*TASK_SECTIONS["rm"]["data"], s.data_sft)}

# task -> its top-level leaves (besides `task`) with their defaults.
TOP_LEVEL = {
    "rm": dict(seed=0, tokenizer=""),  # tokenizer: a folder; empty: model.path's, or trained
    "sft": dict(seed=0, tokenizer=""),
    "grpo": dict(seed=0, tokenizer=""),
    "eval": dict(tokenizer=""),
    "bon": dict(tokenizer=""),
    # export: the folder to load, the dtype written, the largest safetensors shard
    "export": dict(model_path="", param_dtype="float32", max_shard_gb=5.0),
    "construct": dict(),
    "serve": dict(tokenizer=""),
}


def compose(task: str) -> ml_collections.ConfigDict:
  """The sections and top-level leaves of `task` at their defaults."""
  if task not in TASK_SECTIONS:
    raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(TASK_SECTIONS))}")
  c = ml_collections.ConfigDict()
  c.task = task
  for key, value in TOP_LEVEL[task].items():
    c[key] = value
  for name, builders in TASK_SECTIONS[task].items():
    c[name] = s.join(*(build() for build in builders))
  # Values may change from here on; a new leaf would be a second schema.
  c.lock()
  return c


def rm_config() -> ml_collections.ConfigDict:
  """A scalar (Bradley-Terry) reward model: a score head on the decoder."""
  c = compose("rm")
  c.model.architecture = "Qwen2ForSequenceClassification"
  return c


def sft_config() -> ml_collections.ConfigDict:
  """Judge SFT: next-token loss on the judgment tokens."""
  return compose("sft")


def grpo_config(recipe: str = "judge") -> ml_collections.ConfigDict:
  """GRPO of a judge ("judge": rewarded on its verdicts) or a policy ("policy")."""
  if recipe not in RECIPES:
    raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
  c = compose("grpo")
  c.data.recipe = recipe
  c.data.synthetic_eval = 64
  c.reward.functions = ("judge_format:1.0" if recipe == "judge"
                        else "think_answer_format:0.2,answer_accuracy:0.8")
  c.optim.update(learning_rate=1e-4, warmup_steps=0, end_lr_factor=1.0, weight_decay=0.0,
                 b2=0.99)
  c.train.update(num_steps=50, log_every=1, eval_every=0)
  c.checkpoint.every = 10
  return c


def eval_config() -> ml_collections.ConfigDict:
  """Pairwise accuracy of an exported RM or judge on one dataset."""
  c = compose("eval")
  c.data.update(max_length=2048, buckets=(256, 512, 1024, 2048))
  return c


def bon_config() -> ml_collections.ConfigDict:
  """Best-of-N picking with an exported RM or judge on one file of items."""
  c = compose("bon")
  c.data.update(max_length=2048, buckets=(256, 512, 1024, 2048))
  return c


def export_config() -> ml_collections.ConfigDict:
  """A Hugging Face folder loaded onto the mesh and written back."""
  return compose("export")


def construct_config() -> ml_collections.ConfigDict:
  """Preference records built from live OpenAI-compatible endpoints."""
  return compose("construct")


def serve_config() -> ml_collections.ConfigDict:
  """An exported scalar RM or judge behind HTTP (`omni-rrm serve`)."""
  return compose("serve")


TASK_CONFIGS: dict[str, Callable[[], ml_collections.ConfigDict]] = {
    "rm": rm_config, "sft": sft_config, "grpo": grpo_config, "eval": eval_config,
    "bon": bon_config, "export": export_config, "construct": construct_config,
    "serve": serve_config}
