"""`omni-rrm serve` as a subprocess on 127.0.0.1 with a free port, bounded in time."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import httpx

START_TIMEOUT_S = 240


def _command() -> list[str]:
  script = shutil.which("omni-rrm", path=os.path.dirname(sys.executable))
  return [script] if script else [sys.executable, "-c", "from omni_rrm_jax.main import run; run()"]


@contextlib.contextmanager
def running_server(workdir: pathlib.Path, overrides: dict, variant: str = "tiny"):
  """Yields `(url, process)` once WORKDIR/serve.json names the bound address;
  the server is stopped (SIGTERM, then SIGKILL) on exit."""
  args = [*_command(), f"serve:{variant}", f"--workdir={workdir}",
          *(f"--config.{k}={v}" for k, v in overrides.items())]
  log = open(workdir.parent / f"{workdir.name}.log", "w+", encoding="utf-8")
  proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
  address = workdir / "serve.json"
  try:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not address.exists():
      if proc.poll() is not None or time.monotonic() > deadline:
        log.seek(0)
        raise AssertionError(f"server did not start (exit {proc.poll()}):\n{log.read()[-3000:]}")
      time.sleep(0.2)
    url = json.loads(address.read_text())["url"]
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    yield url, proc
  finally:
    proc.terminate()
    try:
      proc.wait(15)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait(5)
    log.close()


def server_log(workdir: pathlib.Path) -> str:
  return (workdir.parent / f"{workdir.name}.log").read_text()
