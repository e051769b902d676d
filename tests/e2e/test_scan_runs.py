"""`model.scan_layers=True` through the command line: a LoRA RM on stacked layers.

Checked: the same parameters train as with a layer list, the checkpoint holds
stacked adapters, resume is exact, and the merged and PEFT exports (per-layer
names) give transformers / peft the same rewards.
"""

import json

import pytest

from tests.e2e.runs import assert_merged_equals_peft, cli, same_adapters
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
  a = same_adapters(tmp_path / "straight", tmp_path / "resumed")
  assert "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight" in a
  assert_merged_equals_peft(tmp_path / "straight", base[0])

