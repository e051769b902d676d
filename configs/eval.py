"""Evaluate a reward model or a judge (a Hugging Face folder, e.g. a training
run's `WORKDIR/hf` export) on preference data in any supported format.

Command (CPU; seconds to minutes for tiny models):
  omni-rrm --config=configs/eval.py --config.model.path=RUN/hf \
      --config.data.path=../shared/data/llmbar --workdir=EVAL_DIR
  (format is recognised from field names: hh_rlhf, llmbar, rewardbench,
  pairwise, native; force it with --config.data.format=NAME)

Hardware: any; the model is sharded over all visible devices.
Result: EVAL_DIR/eval_report.json with accuracy overall, per modality and per
subset (ties and unparseable / unscorable records counted apart; for a judge
also the accuracy with unparseable outputs dropped, the valid-JSON rate and
A/B position consistency). A model trained only on synthetic pairs scores near
chance on real text: the point there is that real lengths and formats work.
"""

import ml_collections

from omni_rrm_jax.sharding.config import mesh_config, rules_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.task = "eval"
  c.model = ml_collections.ConfigDict(dict(path="", dtype="float32"))
  c.tokenizer = ""
  c.data = ml_collections.ConfigDict(dict(
      path="", format="auto", media_root="", strict=False, limit=0, seed=0,
      max_length=2048, buckets=(256, 512, 1024, 2048), batch_size=16))
  c.judge = ml_collections.ConfigDict(dict(max_new_tokens=384))
  c.mesh = mesh_config()
  c.rules = rules_config()
  return c
