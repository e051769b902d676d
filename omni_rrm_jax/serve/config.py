"""Serve an exported scalar RM or rubric judge over HTTP (`omni-rrm serve`).

Command (CPU; the server is up in seconds for a tiny model, the first request
of each batch shape compiles):
  omni-rrm serve[:tiny] --config.model.path=RUN/hf --config.serve.media_root=DATA_DIR \
      --workdir=SERVE_DIR [--config.serve.port=8000] [--config.serve.api_key_file=KEY]
  (the same as `omni-rrm --config=configs/serve.py --config.model.path=... --workdir=...`)

Hardware: any; the model is sharded over all visible devices of one process.
Result: POST /score, POST /v1/chat/completions (a judge), GET /healthz and
GET /metrics on serve.host:serve.port; SERVE_DIR/serve.json names the bound
address once the model is loaded. A `*ForSequenceClassification` folder serves
rewards, a causal LM serves judgments (README: "Serving").

Variants:
  ""    (default) batches of 8 rows, 5 ms of waiting, 1024-token sequences.
  tiny  the tests' and the load benchmark's settings: any free port on
        127.0.0.1, 256-token sequences, 32-token judgments.
"""

import ml_collections

from omni_rrm_jax.config.tasks import serve_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = serve_config()
  if arg == "tiny":
    c.serve.update(port=0, max_length=256, bucket=64, max_batch_rows=8, max_wait_ms=5.0)
    c.judge.max_new_tokens = 32
  elif arg:
    raise ValueError(f"unknown configs/serve.py variant {arg!r}; known: '', 'tiny'")
  return c
