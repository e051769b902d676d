"""Helpers of the multi-process tests: a task's runs and what they leave behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import load_file

from tests.multihost import harness

TOL = 1e-5  # fp32 parameters after K steps, 2 processes vs 1


def exported(workdir: str) -> dict[str, np.ndarray]:
  return load_file(os.path.join(workdir, "hf", "model.safetensors"))


def assert_same_weights(a: dict, b: dict, tol: float = TOL) -> None:
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_allclose(a[name], b[name], atol=tol, rtol=0, err_msg=name)


def metric_rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def assert_same_rows(a: list[dict], b: list[dict], tol: float = 1e-4) -> None:
  """The same (step, split) rows with the same metrics (timings aside)."""
  strip = lambda r: {k: v for k, v in r.items()  # noqa: E731
                     if k not in ("steps_per_second", "tokens_per_second",
                                  "data_wait_fraction")}
  a, b = [strip(r) for r in a], [strip(r) for r in b]
  assert [(r["step"], r["split"], sorted(r)) for r in a] == \
         [(r["step"], r["split"], sorted(r)) for r in b]
  for ra, rb in zip(a, b):
    for k in ra:
      if not isinstance(ra[k], (int, float)) or ra[k] is None:
        assert ra[k] == rb[k], k
        continue
      np.testing.assert_allclose(ra[k], rb[k], rtol=tol, atol=tol, err_msg=f"{k} at {ra['step']}")


def summary(workdir: str) -> dict:
  with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
    return json.load(f)


def run_and_signal(num_processes: int, args: list[str], *, workdir: str, after_step: int,
                   signalled: int = 1, timeout: float = 300) -> list[int]:
  """Starts a group, sends SIGTERM to process `signalled` once process 0 has
  logged step `after_step`, and waits; returns the exit codes."""
  port = harness.free_port()
  env = harness.process_env(8 // num_processes)
  procs = []
  logdir = os.path.join(workdir + "_logs")
  os.makedirs(logdir, exist_ok=True)
  for i in range(num_processes):
    cmd = [sys.executable, "-m", "omni_rrm_jax.main", *args]
    if num_processes > 1:
      cmd += harness.distributed_args(num_processes, port, i)
    out = open(os.path.join(logdir, f"{i}.log"), "w", encoding="utf-8")
    procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  cwd=harness.ROOT, start_new_session=True))
  deadline = time.monotonic() + timeout
  metrics = os.path.join(workdir, "metrics.jsonl")
  try:
    while time.monotonic() < deadline:
      if any(p.poll() not in (None, 0) for p in procs):
        break
      if os.path.exists(metrics) and any(r["step"] >= after_step for r in metric_rows(workdir)):
        procs[signalled].send_signal(signal.SIGTERM)
        break
      time.sleep(0.05)
    codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, 9)
  if any(codes):
    tails = "\n".join(open(os.path.join(logdir, f"{i}.log"), encoding="utf-8").read()[-3000:]
                      for i in range(num_processes))
    raise harness.ProcessGroupError(f"exit codes {codes}\n{tails}")
  return codes
