"""Huge pages for host memory: when the command line re-executes itself, and that the
glibc tunable it sets does cut the page faults of fresh large allocations."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from omni_rrm_jax.core import huge_pages
from omni_rrm_jax.core.huge_pages import huge_pages_env

LINUX = dict(system="Linux", libc="glibc", mode="madvise")


def test_the_tunable_is_added_to_an_empty_or_existing_glibc_tunables():
  assert huge_pages_env({"PATH": "/bin"}, **LINUX) == {
      "PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  env = huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, **LINUX)
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("environ, where", [
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, LINUX),  # the re-executed process
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, LINUX),  # the user's own choice
    ({"OMNI_RRM_HUGE_PAGES": "0"}, LINUX),
    ({}, dict(LINUX, mode="always")),  # every mapping gets huge pages already
    ({}, dict(LINUX, mode="never")),
    ({}, dict(LINUX, mode=None)),  # no THP file
    ({}, dict(LINUX, libc="")),  # musl: not a glibc tunable
    ({}, dict(LINUX, system="Darwin")),
])
def test_nothing_to_change_means_no_second_execution(environ, where):
  assert huge_pages_env(environ, **where) is None


def test_without_a_default_only_an_explicit_ask_re_executes():
  # The side-by-side benchmarks: huge pages only with OMNI_RRM_HUGE_PAGES=1.
  assert huge_pages_env({}, **LINUX, default=False) is None
  assert huge_pages_env({"OMNI_RRM_HUGE_PAGES": "0"}, **LINUX, default=False) is None
  asked = huge_pages_env({"OMNI_RRM_HUGE_PAGES": "1"}, **LINUX, default=False)
  assert asked["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
  assert huge_pages_env({"OMNI_RRM_HUGE_PAGES": "1"}, **dict(LINUX, mode="never"),
                        default=False) is None


def test_thp_mode_reads_the_bracketed_word(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert huge_pages.thp_mode(str(path)) == "madvise"
  assert huge_pages.thp_mode(str(tmp_path / "missing")) is None


def _this_machine_can():
  return (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
          and huge_pages.thp_mode() == "madvise")


needs_thp_madvise = pytest.mark.skipif(
    not _this_machine_can(), reason="needs Linux, glibc and the kernel's THP mode 'madvise'")

# Touches a fresh 64 MiB malloc block page by page and prints the minor faults it took.
_FAULTS = textwrap.dedent("""
    import ctypes, resource
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    size = 64 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


@needs_thp_madvise
def test_the_tunable_cuts_the_faults_of_a_fresh_large_block():
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  plain = int(subprocess.check_output([sys.executable, "-c", _FAULTS], env=env))
  huge = int(subprocess.check_output([sys.executable, "-c", _FAULTS],
                                     env=huge_pages_env(env, **LINUX)))
  assert plain >= 64 * 256 * 0.9  # one fault per 4 KiB page
  assert huge * 10 < plain, (huge, plain)


@needs_thp_madvise
def test_the_command_line_re_executes_itself_once_with_the_tunable():
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "OMNI_RRM_HUGE_PAGES")}
  code = ("import os; from omni_rrm_jax.core.huge_pages import reexec_with_huge_pages; "
          "print('start', os.getpid(), flush=True); reexec_with_huge_pages(); "
          "print('tunables', os.environ.get('GLIBC_TUNABLES'))")
  out = subprocess.check_output([sys.executable, "-c", code], env=env, text=True).split("\n")
  starts = [line for line in out if line.startswith("start")]
  assert len(starts) == 2 and len(set(starts)) == 1  # the same process, started twice
  assert "tunables glibc.malloc.hugetlb=1" in out
  env["OMNI_RRM_HUGE_PAGES"] = "0"
  out = subprocess.check_output([sys.executable, "-c", code], env=env, text=True).split("\n")
  assert sum(line.startswith("start") for line in out) == 1 and "tunables None" in out


def test_huge_pages_asked_reads_the_tunable_value():
  assert huge_pages.huge_pages_asked({"GLIBC_TUNABLES": "a.b=2:glibc.malloc.hugetlb=1"})
  assert not huge_pages.huge_pages_asked({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
  assert not huge_pages.huge_pages_asked({})
