"""LoRA through the command line: a scalar RM, a judge SFT and a judge GRPO.

A short full RM run exports the base; LoRA runs start from it. Checked: only
the adapters and the score head train (their optimizer state is all there is),
the checkpoints hold no base weight, resume is exact, and the two exports
(merged, PEFT adapter) give transformers / peft the same outputs.
"""

import json
import os

import numpy as np
import pytest

from tests.e2e.runs import assert_merged_equals_peft, cli, same_adapters
from tests.train.fixtures import saved_arrays

pytestmark = pytest.mark.slow

STEPS = ("--config.optim.warmup_steps=1", "--config.train.progress_bar=False",
         "--config.checkpoint.async_save=False")


def _ok(proc):
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """A 1-step full RM run: its `hf` folder and tokenizer are the LoRA runs' base."""
  root = tmp_path_factory.mktemp("lora_base")
  _ok(cli("rm.py:tiny", str(root), "--config.train.num_steps=2", *STEPS))
  return str(root / "hf"), str(root / "tokenizer")


def _lora_rm(workdir, base, steps, *extra):
  path, tokenizer = base
  return cli("rm.py:tiny", str(workdir), f"--config.model.path={path}",
             f"--config.tokenizer={tokenizer}", "--config.lora.rank=4", "--config.lora.alpha=8",
             f"--config.train.num_steps={steps}", "--config.checkpoint.every=2", *STEPS, *extra)


def test_lora_rm_trains_adapters_only_resumes_exactly_and_exports(base, tmp_path):
  straight = _ok(_lora_rm(tmp_path / "straight", base, 4))
  adapters_and_head = straight["trainable_params"]
  # rank 4 over 2 layers x 7 linear layers of a 64-wide model, plus the 64 x 1 head
  assert adapters_and_head == 8256 and straight["frozen_params"] > 10 * adapters_and_head
  # Adam's mu and nu of the trained parameters and two step counters: nothing of the base.
  assert straight["optimizer_state_elements"] == 2 * adapters_and_head + 2
  saved = saved_arrays(tmp_path / "straight" / "checkpoints" / "4" / "state")
  assert saved and not any("embed_tokens" in n or "layernorm" in n for n in saved)
  assert all("lora" in n or "score" in n for n in saved if "params" in n)

  _ok(_lora_rm(tmp_path / "resumed", base, 2))
  resumed = _ok(_lora_rm(tmp_path / "resumed", base, 4))
  assert resumed["step"] == 4
  a = same_adapters(tmp_path / "straight", tmp_path / "resumed")
  assert "base_model.model.score.weight" in a
  assert any(np.abs(v).max() > 0 for k, v in a.items() if "lora_B" in k)  # B trained
  assert_merged_equals_peft(tmp_path / "straight", base[0])



def test_lora_sft_then_grpo_with_kl_to_the_base(base, tmp_path):
  path, tokenizer = base
  sft = _ok(cli("sft.py:tiny", str(tmp_path / "sft"), f"--config.tokenizer={tokenizer}",
                "--config.lora.rank=4", "--config.lora.dropout=0.1",
                "--config.train.num_steps=3", *STEPS))
  assert sft["optimizer_state_elements"] == 2 * sft["trainable_params"] + 2
  assert os.path.exists(tmp_path / "sft" / "hf_adapter" / "adapter_config.json")
  grpo = _ok(cli("grpo.py:tiny", str(tmp_path / "grpo"),
                 f"--config.model.path={tmp_path / 'sft' / 'hf'}",
                 f"--config.tokenizer={tokenizer}", "--config.data.train_path=synthetic",
                 "--config.lora.rank=4", "--config.grpo.beta=0.05",
                 "--config.train.num_steps=2", "--config.optim.warmup_steps=0",
                 "--config.rollout.prompts_per_step=2", "--config.rollout.num_generations=2",
                 "--config.rollout.max_new_tokens=8", "--config.eval.num_prompts=0",
                 "--config.train.progress_bar=False"))
  assert grpo["step"] == 2
  assert grpo["optimizer_state_elements"] == 2 * grpo["trainable_params"] + 2
  rows = [json.loads(line) for line in open(tmp_path / "grpo" / "metrics.jsonl")]
  kl = [r["kl_mean"] for r in rows if r.get("split") == "train" and "kl_mean" in r]
  # Adapters start at B = 0: the first update's policy is its reference exactly.
  assert kl and kl[0] == pytest.approx(0.0, abs=1e-6)
  config = json.load(open(tmp_path / "grpo" / "hf_adapter" / "adapter_config.json"))
  assert config["r"] == 4 and config["task_type"] == "CAUSAL_LM"
  assert config["base_model_name_or_path"] == str(tmp_path / "sft" / "hf")
