"""Best-of-N: pick one of N candidates per prompt with a reward model (its scores)
or a judge (a knockout, each match judged in both A/B orders).

Command (CPU; seconds to minutes for tiny models):
  omni-rrm --config=configs/bon.py --config.model.path=RUN/hf \
      --config.data.path=reward-bench-2/data --workdir=BON_DIR

Data: JSONL / JSON / Parquet rows with `prompt` and `candidates` (optional
`quality`, one number per candidate, higher is better), or RewardBench 2's rows
(`chosen` answers quality 1, `rejected` 0). Candidates are put in a seeded
order per item (`data.seed`).

Hardware: any; the model is sharded over all visible devices.
Result: BON_DIR/bon_picks.jsonl (candidates, scores, the pick) and
BON_DIR/bon_report.json: the picked answers' mean quality against random
choice and the oracle, overall and per subset, each with a bootstrap 95%
interval (`report.ci_samples`), and the gain over random with its paired
interval. Expect a gain near 0 from a model trained only on synthetic pairs.
"""

import ml_collections

from omni_rrm_jax.config.tasks import bon_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  if arg not in ("", "tiny"):
    raise ValueError(f"unknown bon variant {arg!r}; known: '' (default), tiny")
  return bon_config()
