"""Evaluate a reward model or a judge (a Hugging Face folder, e.g. a training
run's `WORKDIR/hf` export) on preference data in any supported format.

Command (CPU; seconds to minutes for tiny models):
  omni-rrm --config=configs/eval.py --config.model.path=RUN/hf \
      --config.data.path=../shared/data/llmbar --workdir=EVAL_DIR
  (format is recognised from field names: hh_rlhf, llmbar, rewardbench,
  pairwise, native, chat and the benchmarks below; force it with
  --config.data.format=NAME)

Benchmarks as published (see the README's "Benchmarks the field uses"):
  omni-rrm --config=configs/eval.py:rewardbench2 --config.model.path=RUN/hf \
      --config.data.path=reward-bench-2/data --workdir=EVAL_DIR
  variants: rewardbench, rewardbench2, vl_rewardbench, mm_rewardbench,
  omni_rewardbench, pandalm. Each sets `data.format` and the lengths the
  benchmark needs; the report gains "benchmark" (its own score with a
  bootstrap 95% interval and the parts it is made of).

Hardware: any; the model is sharded over all visible devices.
Result: EVAL_DIR/eval_report.json with accuracy overall, per modality and per
subset, with and without ties (a scalar RM predicts a tie when |reward A -
reward B| < report.tie_margin), each with a bootstrap 95% interval; ties and
unparseable / unscorable records counted apart (parse-failure rate); for a
judge also the accuracy with unparseable outputs dropped, the valid-JSON rate
and A/B position consistency; latency per pair (p50 / p95, compiling calls
left out). A model trained only on synthetic pairs scores near chance on real
text: the point there is that real lengths and formats work.
"""

import ml_collections

from omni_rrm_jax.config.tasks import eval_config

# variant -> (data.format, data.max_length): long enough for the benchmark's
# prompts and answers (RewardBench's code and math answers, PandaLM's inputs).
BENCHMARKS = {
    "rewardbench": ("rewardbench", 2048),
    "rewardbench2": ("rewardbench2", 2048),
    "vl_rewardbench": ("vl_rewardbench", 2048),
    "mm_rewardbench": ("mm_rewardbench", 2048),
    "omni_rewardbench": ("omni_rewardbench", 2048),
    "pandalm": ("pandalm", 1024),
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = eval_config()
  if arg in ("", "tiny"):  # tiny: the defaults, as for the other tasks
    return c
  if arg not in BENCHMARKS:
    raise ValueError(f"unknown eval variant {arg!r}; known: {', '.join(BENCHMARKS)}")
  fmt, max_length = BENCHMARKS[arg]
  c.data.format = fmt
  c.data.max_length = max_length
  c.data.buckets = tuple(b for b in (256, 512, 1024, 2048) if b <= max_length)
  if arg == "pandalm":
    # PandaLM's labels include ties (about a fifth of its test set): a scalar RM
    # predicts one when the rewards are this close.
    c.report.tie_margin = 0.1
  return c
