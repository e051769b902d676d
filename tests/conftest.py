"""Test set-up: 8 simulated host CPU devices, one compilation cache, shared tiny models.

The session compiles into one persistent XLA cache: JAX_COMPILATION_CACHE_DIR
if set, else a fresh folder removed when the session ends. It is exported to
the environment, so the runs the tests start as subprocesses (the command line,
the multi-process groups, the servers) reuse what the session and the other
runs compiled: a group of processes no longer compiles again the programs the
same configuration's previous run compiled. Cached programs are the programs
XLA would compile; the compile counters (`train/step.py`) still see each one.
"""

import atexit
import os
import shutil
import tempfile

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
  _SESSION_CACHE = tempfile.mkdtemp(prefix="omni_rrm_xla_cache_")
  atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_rm_folder(tmp_path_factory) -> str:
  """The session's tiny exported scalar RM (`tests/tiny_rm.py`), built once."""
  from tests.tiny_rm import build_tiny_rm
  return build_tiny_rm(str(tmp_path_factory.mktemp("tiny_rm")))
