"""The `export` task end to end through the command line."""

import json
import os
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

from tests.models.hf_fixtures import saved_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "omni_rrm_jax.main",
                         f"--config={ROOT}/configs/export.py", *args],
                        capture_output=True, text=True, env=env, timeout=300)


def test_export_converts_dtype_and_reports(tmp_path):
  src = saved_model("qwen3_cls")
  proc = _run(f"--config.model_path={src}", "--config.param_dtype=bfloat16",
              f"--workdir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  out = tmp_path / "hf"
  assert report["output"] == str(out)
  tensors = load_file(str(out / "model.safetensors"))
  original = load_file(os.path.join(src, "model.safetensors"))
  assert report["num_params"] == sum(int(np.prod(t.shape)) for t in original.values())
  assert set(tensors) == set(original)
  assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
  np.testing.assert_allclose(tensors["score.weight"].astype(np.float32), original["score.weight"],
                             rtol=1e-2)


def test_bad_config_key_and_missing_folder_are_one_line_errors(tmp_path):
  proc = _run("--config.modle_path=x", f"--workdir={tmp_path}")
  assert proc.returncode != 0 and "modle_path" in proc.stderr
  proc = _run(f"--config.model_path={tmp_path}/nope", f"--workdir={tmp_path}")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("omni-rrm: error:") and "nope" in last
