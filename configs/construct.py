"""Preference records built from live models behind OpenAI-compatible endpoints.

Command (any machine that reaches the endpoints; no accelerator):
  omni-rrm --config=configs/construct.py --workdir=OUT_DIR \
      --config.construct.prompts_path=prompts.jsonl --config.data.media_root=MEDIA_DIR \
      --config.construct.strong.url=http://HOST:8000/v1 --config.construct.strong.model=NAME \
      --config.construct.weak.url=... --config.construct.weak.model=... \
      --config.construct.teacher_1.url=... --config.construct.teacher_1.model=... \
      --config.construct.teacher_2.url=... --config.construct.teacher_2.model=...

Each endpoint also takes `api_key_env` (the environment variable holding its
key), `concurrency`, `requests_per_second`, `timeout`, `max_retries`, `backoff`,
`max_tokens` and `temperature`.

Hardware: one CPU process; time is the endpoints' (4 responses and 4 judgments'
worth of requests per prompt: 2 responses, 2 teachers x 2 A/B orders).
Result: OUT_DIR/records.jsonl (native records: label and scores where both
teachers agree in both orders, rationale the first teacher's rubric judgment)
and OUT_DIR/construct_report.json (kept, dropped by reason, failed, and per
endpoint: requests, retries, cache hits). Rerun the same command to resume:
cached replies are not asked again.
"""

import ml_collections

from omni_rrm_jax.config.tasks import construct_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  return construct_config()
