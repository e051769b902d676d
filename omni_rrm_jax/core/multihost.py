"""What every process must agree on: one writer, barriers, and small agreements.

A pod slice runs one JAX process per host, each with the same program. Files
are written by process 0 only, behind a barrier so no process reads what is not
yet written; decisions that depend on a process's own data (a batch's bucket,
a stop request) are agreed with one small collective. With one process every
function here is a no-op or the identity.
"""

from __future__ import annotations

import zlib
from typing import Callable, TypeVar

import jax
import numpy as np

T = TypeVar("T")


def is_writer() -> bool:
  """Whether this process writes shared files (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Blocks until every process reaches the barrier `name`."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def written_by_one(name: str, write: Callable[[], T]) -> T | None:
  """Runs `write` on process 0 only, then waits for it on every process.

  An error on the writer is raised there and, on the others, becomes a clear
  error at the barrier instead of a read of a half-written file.
  """
  result, failed = None, False
  try:
    if is_writer():
      result = write()
  except BaseException:
    failed = True
    raise
  finally:
    if jax.process_count() > 1:
      if agree_any(failed):
        if not failed:
          raise RuntimeError(f"process 0 failed while writing {name}; see its log")
  return result


def allgather(values) -> np.ndarray:
  """`values` (a small integer vector) of every process, one row per process.

  Between processes the values travel as 32-bit integers (JAX without x64),
  so larger ones wrap the same way on every process: fine for equality
  checks, not for magnitudes past 2**31 (send float bits or split them).
  """
  values = np.asarray(values, np.int64).reshape(-1)
  if jax.process_count() == 1:
    return values[None]
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(values)).reshape(jax.process_count(), -1)


def agree_max(values) -> np.ndarray:
  """The element-wise maximum of an int vector over processes."""
  return allgather(values).max(axis=0)


def agree_any(flag: bool) -> bool:
  """Whether any process passed True."""
  return bool(allgather([int(bool(flag))]).any())


def fingerprint(text: str) -> int:
  return zlib.crc32(text.encode("utf-8"))


def check_same(description: str, what: str) -> None:
  """Raises one clear error when processes disagree on `description`.

  Cheap: one collective of one integer; only on a mismatch are the
  descriptions themselves gathered, to name both sides.
  """
  if jax.process_count() == 1:
    return
  prints = allgather([fingerprint(description)])[:, 0]
  if (prints == prints[0]).all():
    return
  data = description.encode("utf-8")[:4096]
  padded = np.zeros(4096 + 1, np.int64)
  padded[0] = len(data)
  padded[1:1 + len(data)] = np.frombuffer(data, np.uint8)
  rows = allgather(padded)
  seen = [bytes(row[1:1 + row[0]].astype(np.uint8)).decode("utf-8", "replace") for row in rows]
  other = next(i for i, p in enumerate(prints) if p != prints[0])
  raise ValueError(f"processes disagree on {what}: process 0 has {seen[0]}, "
                   f"process {other} has {seen[other]}")
