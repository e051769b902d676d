"""`model.scan_layers=True` through the command line: a LoRA RM on stacked layers.

Checked: the same parameters train as with a layer list, the checkpoint holds
stacked adapters, resume is exact, and the merged and PEFT exports (per-layer
names) give transformers / peft the same rewards.
"""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.e2e.runs import cli
from tests.train.fixtures import saved_arrays

pytestmark = pytest.mark.slow

STEPS = ("--config.optim.warmup_steps=1", "--config.train.progress_bar=False",
         "--config.checkpoint.async_save=False")


def _ok(proc):
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _lora_rm(workdir, base, steps):
  path, tokenizer = base
  return cli("rm.py:tiny", str(workdir), f"--config.model.path={path}",
             f"--config.tokenizer={tokenizer}", "--config.lora.rank=4", "--config.lora.alpha=8",
             "--config.model.scan_layers=True", f"--config.train.num_steps={steps}",
             "--config.checkpoint.every=2", *STEPS)


def test_scanned_lora_rm_resumes_exactly_and_exports_per_layer(tmp_path):
  import peft
  import torch
  import transformers
  root = tmp_path / "base"
  _ok(cli("rm.py:tiny", str(root), "--config.train.num_steps=2",
          "--config.model.scan_layers=True", *STEPS))
  base = (str(root / "hf"), str(root / "tokenizer"))
  straight = _ok(_lora_rm(tmp_path / "straight", base, 4))
  # rank 4 over 2 layers x 7 linear layers of a 64-wide model, plus the 64 x 1 head
  assert straight["trainable_params"] == 8256
  saved = saved_arrays(tmp_path / "straight" / "checkpoints" / "4" / "state")
  assert all("lora" in n or "score" in n for n in saved if "params" in n)
  _ok(_lora_rm(tmp_path / "resumed", base, 2))
  assert _ok(_lora_rm(tmp_path / "resumed", base, 4))["step"] == 4
  a = load_file(str(tmp_path / "straight" / "hf_adapter" / "adapter_model.safetensors"))
  b = load_file(str(tmp_path / "resumed" / "hf_adapter" / "adapter_model.safetensors"))
  assert set(a) == set(b)
  assert "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight" in a
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)

  ids = torch.tensor(np.random.default_rng(0).integers(3, 300, (2, 10)))
  with torch.no_grad():
    auto = transformers.AutoModelForSequenceClassification
    merged = auto.from_pretrained(str(tmp_path / "straight" / "hf")).eval()(ids).logits
    peft_model = peft.PeftModel.from_pretrained(
        auto.from_pretrained(base[0]).eval(), str(tmp_path / "straight" / "hf_adapter")).eval()
    adapted = peft_model(ids).logits
    plain = auto.from_pretrained(base[0]).eval()(ids).logits
  np.testing.assert_allclose(adapted.numpy(), merged.numpy(), atol=1e-5, rtol=0)
  assert np.abs(merged.numpy() - plain.numpy()).max() > 1e-4  # training changed the rewards
