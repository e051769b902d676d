"""Starts N JAX processes on 127.0.0.1 and collects what each one returns.

  results = run_function(2, "tests.multihost.tasks:rm_params", {"workdir": w})
  logs = run_cli(2, ["--config=configs/rm.py:tiny", f"--workdir={w}"])

Each process is a fresh Python interpreter with its own share of simulated
CPU devices (`--xla_force_host_platform_device_count`), joined through
`jax.distributed.initialize` and gloo collectives. When one process dies, the
others are killed at once and the error shows every process's log tail; a
collective that hangs ends at the timeout the same way, so a broken run
never stalls the test suite.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TAIL_LINES = 40


class ProcessGroupError(AssertionError):
  """A process of the group failed or the group ran past its timeout."""


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(devices: int) -> dict[str, str]:
  """The environment of one process: CPU only, `devices` simulated devices."""
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
  env["JAX_PLATFORMS"] = "cpu"
  env["TOKENIZERS_PARALLELISM"] = "false"
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
  return env


def _tail(path: str) -> str:
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      return "".join(f.readlines()[-TAIL_LINES:])
  except FileNotFoundError:
    return "(no output)"


def run_group(commands: Sequence[Sequence[str]], *, devices: int, timeout: float,
              cwd: str = ROOT) -> list[str]:
  """Runs one command per process concurrently; returns their combined outputs.

  Raises:
    ProcessGroupError: a process exited non-zero (the rest are killed) or the
      group ran past `timeout` seconds; the message holds every log tail.
  """
  logdir = tempfile.mkdtemp(prefix="multihost_")
  logs = [os.path.join(logdir, f"process_{i}.log") for i in range(len(commands))]
  procs = []
  env = process_env(devices)
  for cmd, log in zip(commands, logs):
    with open(log, "w", encoding="utf-8") as out:
      procs.append(subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=cwd, start_new_session=True))
  deadline = time.monotonic() + timeout
  failure = None
  while failure is None:
    codes = [p.poll() for p in procs]
    bad = [i for i, c in enumerate(codes) if c not in (None, 0)]
    if bad:
      failure = f"process {bad[0]} exited with code {codes[bad[0]]}"
    elif all(c == 0 for c in codes):
      break
    elif time.monotonic() > deadline:
      failure = f"timed out after {timeout:.0f} s (a hung collective?)"
    else:
      time.sleep(0.2)
  if failure is not None:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, 9)
        p.wait()
    tails = "\n".join(f"--- process {i} (exit {p.returncode}) ---\n{_tail(log)}"
                      for i, (p, log) in enumerate(zip(procs, logs)))
    raise ProcessGroupError(f"{failure}\n{tails}")
  outputs = []
  for log in logs:
    with open(log, encoding="utf-8", errors="replace") as f:
      outputs.append(f.read())
  return outputs


def distributed_args(num_processes: int, port: int, process_id: int) -> list[str]:
  return [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
          f"--process_id={process_id}"]


def run_cli(num_processes: int, args: Sequence[str], *, devices: int | None = None,
            timeout: float = 300) -> list[str]:
  """`omni-rrm ARGS` in `num_processes` processes (one alone: no distributed
  set-up); the total device count is 8 unless `devices` per process is given."""
  devices = devices or 8 // num_processes
  port = free_port()
  base = [sys.executable, "-m", "omni_rrm_jax.main", *args]
  if num_processes == 1:
    return run_group([base], devices=devices, timeout=timeout)
  return run_group([base + distributed_args(num_processes, port, i)
                    for i in range(num_processes)], devices=devices, timeout=timeout)


def run_function(num_processes: int, target: str, kwargs: dict | None = None, *,
                 devices: int | None = None, timeout: float = 300) -> list:
  """Calls `module:function(**kwargs)` in every process; returns each one's
  JSON-able result, in process order."""
  devices = devices or 8 // num_processes
  port = free_port()
  outdir = tempfile.mkdtemp(prefix="multihost_out_")
  commands = []
  for i in range(num_processes):
    cmd = [sys.executable, "-m", "tests.multihost.worker", f"--target={target}",
           f"--kwargs={json.dumps(kwargs or {})}", f"--out={os.path.join(outdir, f'{i}.json')}"]
    if num_processes > 1:
      cmd += distributed_args(num_processes, port, i)
    commands.append(cmd)
  run_group(commands, devices=devices, timeout=timeout)
  results = []
  for i in range(num_processes):
    with open(os.path.join(outdir, f"{i}.json"), encoding="utf-8") as f:
      results.append(json.load(f))
  return results
