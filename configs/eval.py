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

from omni_rrm_jax.config.tasks import eval_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  return eval_config()
