"""The scalar RM end to end: learning, export parity, exact resume, bad data."""

import json
import os
import signal
import time

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.e2e.runs import cli, trained_rm


def test_tiny_rm_learns_synthetic_preference():
  workdir, summary = trained_rm()
  assert summary["step"] == 240 and not summary["stopped_early"]
  assert summary["eval"]["accuracy"] >= 0.9, summary["eval"]
  assert summary["inputs"]["examples"] == 240 * 16
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  train = [l for l in lines if l["split"] == "train"]
  assert train[-1]["loss"] < train[0]["loss"]
  assert os.path.isdir(os.path.join(workdir, "tensorboard"))


def test_exported_rm_gives_transformers_the_same_rewards():
  import torch
  import transformers

  import omni_rrm_jax as orj
  from omni_rrm_jax.core.batch_contract import RM_BATCH
  from omni_rrm_jax.data.readers import read_records
  from omni_rrm_jax.data.tokenize import ExampleEncoder
  workdir, _ = trained_rm()
  hf_dir = os.path.join(workdir, "hf")
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  ours = orj.from_pretrained(hf_dir)
  theirs = transformers.AutoModelForSequenceClassification.from_pretrained(hf_dir).eval()
  enc = ExampleEncoder(tok, 128, RM_BATCH)
  # The whole held-out split, which the run's own evaluation scored.
  records = list(read_records(os.path.join(workdir, "data", "eval.jsonl")))
  n = len(records)
  seqs = [enc.encode(r)["chosen"] for r in records] + [enc.encode(r)["rejected"] for r in records]
  t = max(map(len, seqs))
  ids = np.full((len(seqs), t), tok.pad_token_id, np.int64)
  mask = np.zeros_like(ids)
  for i, s in enumerate(seqs):
    ids[i, :len(s)], mask[i, :len(s)] = s, 1
  a = np.asarray(ours(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits)
  with torch.no_grad():
    b = theirs(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
  np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
  # The rewards are not trivially equal: the RM separates chosen from rejected,
  # as on its whole held-out split (`test_tiny_rm_learns_synthetic_preference`).
  assert n >= 100 and (a[:n, 0] > a[n:, 0]).mean() >= 0.9


def _final_params(workdir):
  return load_file(os.path.join(workdir, "hf", "model.safetensors"))


def _train_losses(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def test_sigterm_then_resume_matches_an_uninterrupted_run(tmp_path):
  common = ["--config.train.progress_bar=False", "--config.train.num_steps=40", "--config.train.log_every=1",
            "--config.checkpoint.every=5", "--config.train.eval_every=1000",
            "--config.checkpoint.async_save=False", "--config.data.synthetic_train=200"]
  straight = cli("rm.py:tiny", str(tmp_path / "straight"), *common)
  assert straight.returncode == 0, straight.stderr[-3000:]

  interrupted = tmp_path / "interrupted"
  proc = cli("rm.py:tiny", str(interrupted), *common, wait=False)
  deadline = time.time() + 300
  metrics = interrupted / "metrics.jsonl"
  while time.time() < deadline:  # stop it mid-run, once a few steps are done
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 12:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  stopped = json.loads(out.strip().splitlines()[-1])
  assert stopped["stopped_early"] and 0 < stopped["step"] < 40
  resumed = cli("rm.py:tiny", str(interrupted), *common)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert json.loads(resumed.stdout.strip().splitlines()[-1])["step"] == 40

  a, b = _final_params(tmp_path / "straight"), _final_params(interrupted)
  for name in a:
    np.testing.assert_allclose(a[name], b[name], atol=1e-6, rtol=0, err_msg=name)
  # Same data order and no step repeated or skipped: identical per-step losses.
  la, lb = _train_losses(tmp_path / "straight"), _train_losses(interrupted)
  assert sorted(lb) == list(range(1, 41))
  for step in range(1, 41):
    assert la[step] == pytest.approx(lb[step], abs=1e-6), step


BAD_LINES = [
    '{"id": "bad-json", "prompt": ',
    '{"id": "no-prompt", "response_a": "x", "response_b": "y", "label": "A", "modality": "text"}',
    '{"id": "bad-label", "prompt": "p", "response_a": "x", "response_b": "y", "label": "C", "modality": "text"}',
]


def _write_bad_data(folder):
  from omni_rrm_jax.data.records import to_json
  from omni_rrm_jax.synthetic.mixture import mixed_pairs
  good = [to_json(r) for r in mixed_pairs(60, 0)]
  long_prompt = mixed_pairs(1, 5)[0]
  long = json.loads(to_json(long_prompt))
  long.update(id="too-long", response_a="blue " * 400)
  lines = good[:20] + BAD_LINES[:2] + good[20:40] + [json.dumps(long)] + BAD_LINES[2:] + good[40:]
  path = folder / "train.jsonl"
  path.write_text("\n".join(lines) + "\n")
  return path


def test_bad_records_are_skipped_and_counted_or_fatal_when_strict(tmp_path):
  path = _write_bad_data(tmp_path)
  common = ["--config.train.progress_bar=False", f"--config.data.train_path={path}", f"--config.data.eval_path={path}",
            "--config.train.num_steps=6", "--config.train.eval_every=1000",
            "--config.export.at_end=False", "--config.optim.warmup_steps=2"]
  run = cli("rm.py:tiny", str(tmp_path / "lenient"), *common)
  assert run.returncode == 0, run.stderr[-3000:]
  summary = json.loads(run.stdout.strip().splitlines()[-1])
  assert summary["bad_records"]["train"].startswith("61 kept, 3 skipped")
  assert "bad JSON: 1" in summary["bad_records"]["train"]
  # The over-long example is read fine, then marked invalid by the encoder
  # (6 steps x 16 rows cover the 61 records at least once).
  assert summary["inputs"]["examples"] == 96
  assert summary["inputs"]["invalid"]["response too long"] >= 1

  strict = cli("rm.py:tiny", str(tmp_path / "strict"), *common, "--config.data.strict=True")
  assert strict.returncode != 0
  last = strict.stderr.strip().splitlines()[-1]
  assert last.startswith("omni-rrm: error:") and "train.jsonl:21" in last
