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


def same_adapters(straight, resumed) -> dict:
  """The PEFT adapter tensors two runs exported (`WORKDIR/hf_adapter`), asserted
  bit-equal name by name; returns the first run's."""
  import numpy as np
  from safetensors.numpy import load_file

  a = load_file(os.path.join(str(straight), "hf_adapter", "adapter_model.safetensors"))
  b = load_file(os.path.join(str(resumed), "hf_adapter", "adapter_model.safetensors"))
  assert set(a) == set(b)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  return a


def assert_merged_equals_peft(workdir, base_hf: str) -> None:
  """A LoRA RM run's merged export (`WORKDIR/hf`) gives transformers the rewards
  peft gives with its adapter (`WORKDIR/hf_adapter`) on the base, and training
  moved them away from the base's."""
  import numpy as np
  import peft
  import torch
  import transformers

  ids = torch.tensor(np.random.default_rng(0).integers(3, 300, (2, 10)))
  auto = transformers.AutoModelForSequenceClassification
  with torch.no_grad():
    merged = auto.from_pretrained(os.path.join(str(workdir), "hf")).eval()(ids).logits
    peft_model = peft.PeftModel.from_pretrained(
        auto.from_pretrained(base_hf).eval(), os.path.join(str(workdir), "hf_adapter")).eval()
    adapted = peft_model(ids).logits
    plain = auto.from_pretrained(base_hf).eval()(ids).logits
  np.testing.assert_allclose(adapted.numpy(), merged.numpy(), atol=1e-5, rtol=0)
  assert np.abs(merged.numpy() - plain.numpy()).max() > 1e-4  # training changed the rewards
