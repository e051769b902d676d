"""One run per workdir: an exclusive lock held for the run's lifetime.

The lock is `fcntl.flock` on `WORKDIR/.lock`, so the kernel releases it when the
holding process ends, however it ends (no stale lock after kill -9). The file
names the holder (pid and host) for the error a second run prints. On several
processes only process 0 takes it (one writer); workdirs on object stores
(`gs://...`) have no file locks and are not locked.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
_HELD: dict[str, object] = {}  # lock path -> open file holding the lock


def _path(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), LOCK_NAME)


def hold(workdir: str) -> None:
  """Takes the workdir's lock, or raises ValueError naming the run that holds it.

  Taking it again in the process that holds it is a no-op (a task run twice in
  one process, e.g. a resume in a test).
  """
  if "://" in workdir:
    log.info("%s: not locked (object stores have no file locks)", workdir)
    return
  path = _path(workdir)
  if path in _HELD:
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    f.seek(0)
    holder = f.read().strip() or "another process"
    f.close()
    raise ValueError(f"{workdir} is in use by another run ({holder}); wait for it to end or "
                     "choose another --workdir") from None
  f.seek(0)
  f.truncate()
  f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
  f.flush()
  _HELD[path] = f


def release(workdir: str) -> None:
  """Lets the lock go (the end of the run)."""
  f = _HELD.pop(_path(workdir), None) if "://" not in workdir else None
  if f is not None:
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()
