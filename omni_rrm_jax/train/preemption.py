"""Turns SIGTERM / SIGINT into a flag, so the loop can checkpoint and exit.

  with PreemptionGuard() as guard:
    for step in ...:
      state, metrics = train_step(state, batch)
      if guard.should_stop():              # every process, same steps
        ckpt.save(step, state, ..., force=True)
        break

Cloud TPU VMs and most schedulers send SIGTERM some seconds before killing a
preempted worker; without a handler Python dies at once and the steps since
the last checkpoint are lost.

Multi-host: each process receives its own signal, maybe not at the same step.
Saving is collective, so all processes must agree on when to stop;
`should_stop()` therefore OR-reduces the flag over processes (with
`jax.experimental.multihost_utils.process_allgather`), which is itself
collective: every process must call it at the same steps. On one process it
just returns the local flag.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

import jax
import numpy as np

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionGuard:
  """A context manager that records termination signals instead of dying.

  The first signal sets the flag. A second one of the same kind is handed to
  the handler that was installed before, so an impatient Ctrl-C (or a
  scheduler's repeated SIGTERM) still ends a run whose save is stuck.
  Previous handlers are restored on exit.

  Args:
    signals: the signals to catch.
  """

  def __init__(self, signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS):
    self._signals = tuple(signals)
    self._previous: dict[int, object] = {}
    self._received: list[int] = []
    self._flag = threading.Event()

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    if signum in self._received:
      previous = self._previous.get(signum, signal.SIG_DFL)
      signal.signal(signum, previous)
      if callable(previous):
        previous(signum, None)
      else:
        os.kill(os.getpid(), signum)
      return
    self._received.append(signum)
    self._flag.set()
    log.warning("received %s; will save a checkpoint and stop at the next step boundary",
                signal.Signals(signum).name)

  def __enter__(self) -> PreemptionGuard:
    if threading.current_thread() is not threading.main_thread():
      raise RuntimeError("PreemptionGuard must be entered on the main thread "
                         "(Python delivers signals only there)")
    for sig in self._signals:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, previous in self._previous.items():
      signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
    self._previous.clear()

  def request_stop(self) -> None:
    """Sets the flag by hand (e.g. a wall-clock budget ran out)."""
    self._flag.set()

  def local_stop_requested(self) -> bool:
    """This process's flag, without talking to other processes."""
    return self._flag.is_set()

  def should_stop(self) -> bool:
    """Whether any process was asked to stop.

    Collective when `jax.process_count() > 1`: call it at the same steps on
    every process, or the processes deadlock.
    """
    local = self._flag.is_set()
    if jax.process_count() == 1:
      return local
    from jax.experimental import multihost_utils  # multi-host only

    flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
    return bool(np.any(flags))
