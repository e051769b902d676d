"""A data worker does not outlive the main process that started it.

Workers ignore SIGTERM and SIGINT (the main process stops them after its
checkpoint), so a main process killed outright (SIGKILL, the out-of-memory
killer) used to leave them running with all their memory. The worker start-up
now also ends the worker once its parent is gone.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from omni_rrm_jax.data import pipeline

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")

# The main process: starts one worker as Grain's start-up would run it, then
# waits; the worker reports its pid once its start-up has run.
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    child = '''
    import os, signal, sys, time
    from omni_rrm_jax.data.pipeline import leave_stop_signals_to_the_parent
    leave_stop_signals_to_the_parent(0, 1)
    os.kill(os.getpid(), signal.SIGTERM)  # ignored, as a preemption's signal is
    print(os.getpid(), flush=True)
    time.sleep(120)
    '''
    subprocess.Popen([sys.executable, "-c", child], stdout=sys.stdout)
    time.sleep(120)
    """)


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      state = f.read().rsplit(")", 1)[1].split()[0]
  except FileNotFoundError:
    return False
  return state not in ("Z", "X")  # a zombie has exited; only its entry waits to be reaped


def test_worker_exits_when_its_main_process_is_killed(monkeypatch):
  monkeypatch.setenv("PYTHONUNBUFFERED", "1")
  parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
  try:
    worker = int(parent.stdout.readline())  # blocks until the worker's start-up ran
    time.sleep(2 * pipeline.PARENT_POLL_S)
    assert _alive(worker), "the worker ended while its main process lived"
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10 * pipeline.PARENT_POLL_S
    while _alive(worker) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert not _alive(worker), "the worker outlived its killed main process"
  finally:
    parent.kill()
    if "worker" in locals() and _alive(worker):
      os.kill(worker, signal.SIGKILL)
