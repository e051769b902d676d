"""The command line's console: a run that stops on a bad setting prints exactly
one line, even with JAX probing for accelerators as it does in a fresh shell."""

import os
import subprocess
import sys

from tests.e2e.runs import ROOT


def test_bad_setting_is_the_only_console_line(tmp_path):
  # JAX_PLATFORMS unset: JAX tries every backend and logs (at INFO) the ones
  # it cannot start, which must land in the workdir's log, not on the console.
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
  out = subprocess.run(
      [sys.executable, "-m", "omni_rrm_jax.main", f"--config={ROOT}/configs/grpo.py:tiny",
       f"--workdir={tmp_path}", "--config.train.num_steps=1"],
      env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  console = (out.stdout + out.stderr).splitlines()
  assert len(console) == 1, console
  assert console[0].startswith("omni-rrm: error: bad setting: optim.warmup_steps=")
  log = (tmp_path / "log.txt").read_text()
  assert " p0 " in log
