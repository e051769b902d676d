"""One process of a `harness.run_function` group: initialise JAX, call, write the result."""

from __future__ import annotations

import argparse
import importlib
import json


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--target", required=True)
  parser.add_argument("--kwargs", default="{}")
  parser.add_argument("--out", required=True)
  parser.add_argument("--coordinator_address")
  parser.add_argument("--num_processes", type=int)
  parser.add_argument("--process_id", type=int)
  args = parser.parse_args()
  if args.coordinator_address:
    from omni_rrm_jax.main import initialize_distributed
    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
  module, name = args.target.split(":")
  result = getattr(importlib.import_module(module), name)(**json.loads(args.kwargs))
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(result, f)


if __name__ == "__main__":
  main()
