"""Load test of `omni-rrm serve`: throughput and latency against batch settings.

Builds a random tiny text RM (Qwen2ForSequenceClassification, a byte-level BPE
trained on the synthetic colour texts), then for each `--batch_rows` value
starts `omni-rrm serve` on 127.0.0.1 (a free port), warms it up (each row
bucket compiles once, for the one length bucket), and drives it with `--clients` concurrent clients, each
sending `--requests` requests of `--items` (prompt, response) items one after
another. Reports, per setting, items per second over the whole run and the
p50 / p99 request latency; `load_avg` tells how busy the machine was. Every
request has a timeout and the server is stopped after each setting, so the
run is bounded. Prints one JSON line.

    python benchmarks/serve_load.py                                   # ~2 min on 2 CPU cores
    python benchmarks/serve_load.py --batch_rows=1,8,32 --clients=32 --max_wait_ms=10
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omni_rrm_jax.serve.scorers import row_buckets  # noqa: E402
from tests.serve.server_process import running_server  # noqa: E402


def build_rm(folder: pathlib.Path, hidden: int, layers: int) -> str:
  import omni_rrm_jax as orj
  from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
  from omni_rrm_jax.models.hf_save import save_pretrained
  from omni_rrm_jax.synthetic.mixture import mixed_pairs
  from omni_rrm_jax.synthetic.corpus import corpus
  from transformers import AutoTokenizer

  train_tiny_tokenizer(corpus(mixed_pairs(200, 0, ["colour", "sum"])), folder / "tok",
                       vocab_size=400)
  tok = AutoTokenizer.from_pretrained(folder / "tok")
  model = orj.from_config("Qwen2ForSequenceClassification", dict(
      vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
      pad_token_id=tok.pad_token_id, num_labels=1, tie_word_embeddings=False), seed=0)
  return save_pretrained(model, str(folder / "hf"), tokenizer_dir=str(folder / "tok"))


def items(client: int, request: int, n: int) -> list[dict]:
  return [{"prompt": f"What colour is object {client}-{request}-{i}? Answer in one word.",
           "response": f"It is colour number {(client + request + i) % 7}."} for i in range(n)]


def drive(url: str, clients: int, requests: int, n: int, timeout_s: float) -> dict:
  def one_client(c: int) -> list[float]:
    latencies = []
    with httpx.Client(timeout=timeout_s) as http:
      for r in range(requests):
        t = time.perf_counter()
        answer = http.post(f"{url}/score", json={"items": items(c, r, n)})
        answer.raise_for_status()
        assert len(answer.json()["rewards"]) == n
        latencies.append(time.perf_counter() - t)
    return latencies

  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(clients) as pool:
    latencies = [x for xs in pool.map(one_client, range(clients)) for x in xs]
  seconds = time.perf_counter() - start
  ms = np.asarray(latencies) * 1000
  return {"items_per_s": round(clients * requests * n / seconds, 1),
          "p50_ms": round(float(np.percentile(ms, 50)), 1),
          "p99_ms": round(float(np.percentile(ms, 99)), 1), "seconds": round(seconds, 2)}


def batch_sizes(url: str) -> float:
  """Mean rows per model call, from the server's /metrics."""
  text = httpx.get(f"{url}/metrics", timeout=10).text
  values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith("omni_rrm_batch_rows_")}
  return round(values["omni_rrm_batch_rows_sum"] / max(values["omni_rrm_batch_rows_count"], 1), 2)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_rows", default="1,4,16", help="serve.max_batch_rows values")
  parser.add_argument("--max_wait_ms", type=float, default=5.0)
  parser.add_argument("--clients", type=int, default=16)
  parser.add_argument("--requests", type=int, default=20, help="per client")
  parser.add_argument("--items", type=int, default=1, help="per request")
  parser.add_argument("--hidden", type=int, default=128)
  parser.add_argument("--layers", type=int, default=2)
  parser.add_argument("--timeout_s", type=float, default=120.0)
  args = parser.parse_args()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    folder = build_rm(tmp, args.hidden, args.layers)
    for rows in (int(x) for x in args.batch_rows.split(",")):
      overrides = {"model.path": folder, "serve.max_batch_rows": rows,
                   "serve.max_wait_ms": args.max_wait_ms}
      with running_server(tmp / f"server{rows}", overrides) as (url, _):
        for k in row_buckets(rows, 1):  # one request of k items: the call of k rows compiles
          httpx.post(f"{url}/score", json={"items": items(0, k, k)},
                     timeout=args.timeout_s).raise_for_status()
        result = drive(url, args.clients, args.requests, args.items, args.timeout_s)
        results.append({"max_batch_rows": rows, "mean_rows_per_call": batch_sizes(url),
                        **result})
  print(json.dumps({"benchmark": "serve_load", "clients": args.clients,
                    "requests_per_client": args.requests, "items_per_request": args.items,
                    "max_wait_ms": args.max_wait_ms, "hidden": args.hidden,
                    "layers": args.layers, "results": results,
                    "load_avg": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
  main()
