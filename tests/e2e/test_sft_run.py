"""Judge SFT end to end: loss on judgment tokens falls, and the export matches transformers."""

import json

import jax.numpy as jnp
import numpy as np

from tests.e2e.runs import cli


def test_tiny_judge_sft_trains_and_exports(tmp_path):
  run = cli("sft.py:tiny", str(tmp_path), "--config.train.progress_bar=False",
            "--config.train.num_steps=40", "--config.train.eval_every=10",
            "--config.train.log_every=10", "--config.data.synthetic_train=200",
            "--config.data.synthetic_eval=16", "--config.optim.warmup_steps=5")
  assert run.returncode == 0, run.stderr[-3000:]
  summary = json.loads(run.stdout.strip().splitlines()[-1])
  assert summary["inputs"]["truncated"] == 0 and not summary["inputs"]["invalid"]
  evals = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  evals = [e for e in evals if e["split"] == "eval"]
  assert evals[-1]["loss"] < 0.85 * evals[0]["loss"]
  assert evals[-1]["token_accuracy"] > evals[0]["token_accuracy"]

  import torch
  import transformers

  import omni_rrm_jax as orj
  hf = str(tmp_path / "hf")
  assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == [
      "Qwen2ForCausalLM"]
  tok = transformers.AutoTokenizer.from_pretrained(hf)
  ids = np.asarray([tok("What colour is the snow? It is white.")["input_ids"]])
  ours = np.asarray(orj.from_pretrained(hf)(jnp.asarray(ids),
                                           attention_mask=jnp.ones_like(jnp.asarray(ids))).logits)
  model = transformers.AutoModelForCausalLM.from_pretrained(hf).eval()
  with torch.no_grad():
    theirs = model(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
