"""Test set-up: 8 simulated host CPU devices, shared tiny models."""

import os

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_rm_folder(tmp_path_factory) -> str:
  """The session's tiny exported scalar RM (`tests/tiny_rm.py`), built once."""
  from tests.tiny_rm import build_tiny_rm
  return build_tiny_rm(str(tmp_path_factory.mktemp("tiny_rm")))
