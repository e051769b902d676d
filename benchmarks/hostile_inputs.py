"""The hostile-input suite as one number: how many hostile inputs, how many crashed, how many were taken silently.

Runs `tests/hostile/` (bad rows, oversized records, damaged weights and media,
bad settings, shared workdirs, contradicting judgments) in-process with pytest
and sorts every case:

  handled  the test passed: a one-line error naming what and where, or a
           counted skip, as the test asserts;
  silent   the test's assertion failed: the input was accepted, or refused
           without the promised message;
  crash    any other exception escaped: a traceback instead of one line.

Prints the summary line and one JSON line; exits 1 unless every case is handled.

    python benchmarks/hostile_inputs.py        # ~3 min on 2 cores
"""

from __future__ import annotations

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Sorter:
  """A pytest plugin sorting each test's outcome."""

  def __init__(self):
    self.handled: list[str] = []
    self.silent: list[str] = []
    self.crash: list[str] = []

  def pytest_runtest_logreport(self, report):
    if report.when != "call" and not report.failed:
      return
    if report.passed:
      self.handled.append(report.nodeid)
    elif report.failed:
      text = str(report.longrepr)
      kind = self.silent if "AssertionError" in text or "Failed: DID NOT RAISE" in text else (
          self.crash)
      kind.append(report.nodeid)


def main() -> int:
  sorter = _Sorter()
  os.chdir(ROOT)
  sys.path.insert(0, ROOT)
  code = pytest.main(["-q", "-p", "no:cacheprovider", "tests/hostile"], plugins=[sorter])
  total = len(sorter.handled) + len(sorter.silent) + len(sorter.crash)
  print(f"{total} hostile inputs, {len(sorter.crash)} crashes, {len(sorter.silent)} silent")
  print(json.dumps({"hostile_inputs": total, "handled": len(sorter.handled),
                    "crashes": sorter.crash, "silent": sorter.silent, "pytest_exit": int(code)}))
  return 0 if total and not (sorter.crash or sorter.silent) and code == 0 else 1


if __name__ == "__main__":
  sys.exit(main())
