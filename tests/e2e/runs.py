"""Tiny end-to-end runs shared by several tests (each trains once per session)."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_DATA = os.environ.get("OMNI_RRM_SHARED_DATA",
                             os.path.join(ROOT, "..", "shared", "data"))


def load_config(name: str, variant: str = "tiny", **overrides):
  """configs/NAME.py:VARIANT with dotted overrides, like --config.a.b=v."""
  spec = importlib.util.spec_from_file_location(f"config_{name}",
                                                os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  for dotted, value in overrides.items():
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def cli(config: str, workdir: str, *overrides: str, timeout: int = 600, wait: bool = True):
  """Runs `python -m omni_rrm_jax.main` (1 CPU device) in a subprocess."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  args = [sys.executable, "-m", "omni_rrm_jax.main", f"--config={ROOT}/configs/{config}",
          f"--workdir={workdir}", *overrides]
  if not wait:
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
  return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


@functools.cache
def trained_rm() -> tuple[str, dict]:
  """(workdir, summary) of the tiny scalar RM trained in-process on 8 devices."""
  from omni_rrm_jax.train.loop import run
  workdir = tempfile.mkdtemp(prefix="orj_rm_")
  summary = run(load_config("rm", **{"train.num_steps": 240, "train.progress_bar": False,
                                    "train.eval_every": 1000}), workdir)
  return workdir, summary
