"""Transparent huge pages for the host memory of a run, asked for before it starts.

XLA:CPU allocates a step's temporaries anew on every call, and glibc serves each
allocation above its mmap threshold (32 MiB at most) with a fresh anonymous mapping
that the kernel fills one 4 KiB page at a time, on first touch, zeroing each: the
main job's RM step took ~51,000 page faults (211 MB of new pages) a step, its judge
SFT step ~80,000 (README: "Benchmarks"). glibc's tunable `glibc.malloc.hugetlb=1`
makes malloc ask for transparent huge pages on those mappings (`madvise`), 2 MiB at a
time: ~600 faults a step.

glibc reads tunables only when a process starts, so the command line re-executes
itself once, before anything heavy is imported, with the tunable added to
`GLIBC_TUNABLES` (`reexec_with_huge_pages`). It does so only where it changes
something: Linux with glibc, and the kernel's THP mode `madvise` (with `always`
every mapping gets huge pages already; with `never` none can). `OMNI_RRM_HUGE_PAGES=0`
turns it off. Worker processes inherit the variable.

The side-by-side benchmarks against PyTorch re-execute only when asked
(`OMNI_RRM_HUGE_PAGES=1`, `default=False`): with the tunable, our step slowed
down by up to 1.8x whenever it ran right after PyTorch's, whether in the same
process or another one (the kernel zeroing freshly faulted 2 MiB pages), which
measures the two libraries' interplay rather than either of them.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

TUNABLE = "glibc.malloc.hugetlb"
VALUE = "1"
OPT_OUT = "OMNI_RRM_HUGE_PAGES"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
  """The kernel's transparent huge page mode ("always", "madvise", "never"), or None
  where it cannot be read."""
  try:
    with open(path, encoding="ascii") as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def huge_pages_env(environ: Mapping[str, str], *, system: str, libc: str,
                   mode: str | None, default: bool = True) -> dict[str, str] | None:
  """The environment to re-execute with, or None when nothing would change.

  Args:
    environ: the current environment.
    system: `platform.system()`, e.g. "Linux".
    libc: `platform.libc_ver()[0]`, e.g. "glibc".
    mode: the kernel's THP mode (`thp_mode`).
    default: whether to ask for huge pages when `OMNI_RRM_HUGE_PAGES` is unset
      (`0` always turns them off, `1` always asks).
  """
  if environ.get(OPT_OUT, "1" if default else "0") == "0":
    return None
  if system != "Linux" or libc != "glibc" or mode != "madvise":
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if any(item.split("=", 1)[0] == TUNABLE for item in tunables.split(":") if item):
    return None  # set already, by the user or by the first execution
  env = dict(environ)
  env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}={VALUE}" if tunables else f"{TUNABLE}={VALUE}"
  return env


def reexec_with_huge_pages(default: bool = True) -> None:
  """Replaces this process with the same command under `huge_pages_env`, when it
  changes something; returns otherwise (also when the exec fails)."""
  env = huge_pages_env(os.environ, system=platform.system(), libc=platform.libc_ver()[0],
                       mode=thp_mode(), default=default)
  if env is None or not sys.executable:
    return
  try:
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
  except OSError:
    return


def huge_pages_asked(environ: Mapping[str, str] | None = None) -> bool:
  """Whether `environ` (this process's by default) sets the tunable to a nonzero value;
  benchmarks print it beside their numbers."""
  tunables = (os.environ if environ is None else environ).get("GLIBC_TUNABLES", "")
  values = dict(item.split("=", 1) for item in tunables.split(":") if "=" in item)
  return values.get(TUNABLE, "0") != "0"
