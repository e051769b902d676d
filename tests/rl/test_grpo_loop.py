"""The GRPO loop end to end on a tiny judge: format reward rises, exact resume, dynamic sampling.

The policy is a real judge: a short judge SFT (`train.loop.run` on
`configs/sft.py:tiny`) on synthetic colour pairs whose rationales are short but
strictly valid judgments, with a tiny BPE that has seen the judgment format.
After it the judge writes a valid judgment about half the time at temperature
1, so the real `judge_format` reward varies within groups and GRPO can move it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from omni_rrm_jax.synthetic.mixture import mixed_pairs
from omni_rrm_jax.synthetic.corpus import corpus
from omni_rrm_jax.data.records import write_jsonl
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.rl import grpo_loop, rollout
from omni_rrm_jax.train import loop as sft_loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SFT_LENGTH = 96  # prompt ~46 tokens + judgment ~50
PROMPT_LENGTH = 44  # what the SFT judge saw before its judgment (it is sensitive to it)


def _config(name: str, variant: str = "tiny"):
  spec = importlib.util.spec_from_file_location(f"configs_{name}", f"{ROOT}/configs/{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def _set(config, **overrides):
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split("__")
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(dotted)
    node[leaf] = value
  return config


def _short_judgment(record):
  better, worse = record.label, "B" if record.label == "A" else "A"
  rationale = json.dumps({
      "score_A": record.scores["A"], "score_B": record.scores["B"], "better": better,
      "reasoning": f"<think>{better} is correct, {worse} is wrong.</think>",
      "final_verdict": f"<answer>[[{better}]]</answer>"})
  return dataclasses.replace(record, rationale=rationale)


@dataclasses.dataclass(frozen=True)
class Judge:
  root: str

  def path(self, name: str) -> str:
    return os.path.join(self.root, name)

  def overrides(self) -> dict:
    """GRPO settings that match the SFT judge (as `--config.a.b=v` would)."""
    return dict(model__path=self.path("sft/hf"), tokenizer=self.path("tokenizer"),
                reward__functions="judge_format:1.0",
                data__train_path=self.path("train.jsonl"),
                data__eval_path=self.path("eval.jsonl"),
                data__max_prompt_length=PROMPT_LENGTH, data__prompt_bucket=PROMPT_LENGTH,
                rollout__max_new_tokens=56, rollout__prompts_per_step=8,
                rollout__num_generations=8, optim__learning_rate=2e-3,
                optim__warmup_steps=10, train__progress_bar=False, eval__num_prompts=32)


@pytest.fixture(scope="module")
def judge(tmp_path_factory) -> Judge:
  root = str(tmp_path_factory.mktemp("grpo_judge"))
  train = [_short_judgment(r) for r in mixed_pairs(1000, 0, ["colour"])]
  held_out = [_short_judgment(r) for r in mixed_pairs(64, 7, ["colour"], prefix="eval")]
  write_jsonl(train, os.path.join(root, "train.jsonl"))
  write_jsonl(held_out, os.path.join(root, "eval.jsonl"))
  train_tiny_tokenizer(corpus(train) + [r.rationale for r in train],
                       os.path.join(root, "tokenizer"), vocab_size=512)
  sft = _set(_config("sft"), tokenizer=os.path.join(root, "tokenizer"),
             data__train_path=os.path.join(root, "train.jsonl"), data__max_length=SFT_LENGTH,
             data__buckets=(SFT_LENGTH,), optim__learning_rate=3e-3, optim__warmup_steps=10,
             optim__end_lr_factor=0.3, train__num_steps=150, train__log_every=50,
             checkpoint__every=1000, train__progress_bar=False)
  sft_loop.run(sft, os.path.join(root, "sft"))
  return Judge(root)


def _metrics(workdir: str, split: str = "train") -> dict[int, dict]:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: {k: v for k, v in r.items() if not k.startswith("time/") and k != "split"}
          for r in rows if r["split"] == split}


def test_tiny_judge_recipe_raises_format_reward(judge, tmp_path):
  # At 2e-3 one of three seeds fell into an always-unparseable judgment on
  # another CPU (0.570 -> 0.465); at 1e-3 three seeds gained 0.11-0.17.
  overrides = {**judge.overrides(), "optim__learning_rate": 1e-3}
  config = _set(_config("grpo"), train__num_steps=60, **overrides)
  summary = grpo_loop.run(config, str(tmp_path))
  before = summary["eval_start"]["reward/judge_format_mean"]
  after = summary["eval"]["reward/judge_format_mean"]
  print(f"judge_format on held-out prompts: {before:.3f} -> {after:.3f}")
  assert 0.1 < before < 0.85  # the SFT judge sometimes writes a valid judgment
  # Contradictory verdicts, which this SFT judge often writes, are graded as
  # invalid judgments (at most 4/6), so start and end sit lower than before that
  # rule (0.633 -> 0.794 then, 0.518 -> 0.645 after); the required gain is kept.
  # With the brief judge instruction (another tokenizer) it was 0.544 -> 0.721 at
  # 60 steps and 2e-3; at 1e-3, seeds 0 / 1 / 2: 0.570 -> 0.682, 0.574 -> 0.707,
  # 0.547 -> 0.713.
  assert after > before + 0.08 and after > 0.6
  assert summary["eval"]["parse_failure_rate"] < summary["eval_start"]["parse_failure_rate"]
  # Per-prompt rewards of the same 32 held-out prompts before and after: their
  # mean is the evaluation's mean, and the paired change is after - before.
  start, end = summary["eval_start"]["prompts"], summary["eval"]["prompts"]
  assert sorted(start["index"]) == sorted(end["index"]) == list(range(32))
  assert start["modality"] == end["modality"] == ["text"] * 32
  assert np.mean(end["judge_format"]) == pytest.approx(after, abs=1e-6)
  assert summary["eval"]["reward/judge_format_change"] == pytest.approx(after - before, abs=1e-6)
  assert 0 < summary["eval"]["reward/judge_format_change_se"] < after - before
  evals = _metrics(str(tmp_path), "eval")
  assert evals[60]["reward/total_change"] == pytest.approx(
      summary["eval"]["reward/total_mean"] - summary["eval_start"]["reward/total_mean"], abs=1e-6)
  assert "prompts" not in evals[60] and "reward/total_change" not in evals[0]
  assert os.path.exists(os.path.join(summary["export"], "model.safetensors"))


def test_dynamic_sampling_keeps_zero_variance_groups_out_of_the_loss(judge, tmp_path):
  # Pairs (G=2) often agree, so many groups carry no signal and are refilled.
  config = _set(_config("grpo"), train__num_steps=6,
                shaping__dynamic_sampling=True, shaping__max_rounds=3,
                **{**judge.overrides(), "eval__num_prompts": 0, "rollout__num_generations": 2,
                   "optim__warmup_steps": 2})
  grpo_loop.run(config, str(tmp_path))
  rows = _metrics(str(tmp_path))
  assert sorted(rows) == list(range(1, 7))
  for r in rows.values():
    assert r["loss_batch/zero_variance_groups"] == 0
    assert 1 <= r["rollout_rounds"] <= 3
  # Zero-variance groups were sampled, so there was something to drop.
  assert any(r["zero_variance_group_frac"] > 0 for r in rows.values())
  assert any(r["rollout_rounds"] > 1 for r in rows.values())


def _cli(judge: Judge, workdir: str, steps: int) -> list[str]:
  args = [sys.executable, "-m", "omni_rrm_jax.main", f"--config={ROOT}/configs/grpo.py:tiny",
          f"--workdir={workdir}", f"--config.train.num_steps={steps}",
          "--config.checkpoint.every=2", "--config.checkpoint.async_save=False",
          "--config.eval.num_prompts=0", "--config.grpo.num_iterations=2",
          "--config.grpo.num_minibatches=2", "--config.grpo.beta=0.05"]
  small = dict(judge.overrides(), rollout__prompts_per_step=4, rollout__num_generations=4)
  for key, value in small.items():
    if key != "eval__num_prompts":
      args.append(f"--config.{key.replace('__', '.')}={value}")
  return args


def test_sigterm_then_resume_matches_an_uninterrupted_run(judge, tmp_path):
  steps = 8
  # The three runs compile the same programs: share them through JAX's disk cache.
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env.setdefault("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "xla_cache"))
  interrupted, straight = str(tmp_path / "interrupted"), str(tmp_path / "straight")
  proc = subprocess.Popen(_cli(judge, interrupted, steps), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  first = os.path.join(interrupted, "checkpoints", "2")
  deadline = time.time() + 240
  while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == 0, err[-3000:]
  summary = json.loads(out.strip().splitlines()[-1])
  assert summary["stopped_early"] and summary["step"] < steps, summary

  resumed = subprocess.run(_cli(judge, interrupted, steps), env=env, capture_output=True,
                           text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert json.loads(resumed.stdout.strip().splitlines()[-1])["step"] == steps
  full = subprocess.run(_cli(judge, straight, steps), env=env, capture_output=True, text=True,
                        timeout=300)
  assert full.returncode == 0, full.stderr[-3000:]

  a = load_file(os.path.join(interrupted, "hf", "model.safetensors"))
  b = load_file(os.path.join(straight, "hf", "model.safetensors"))
  assert set(a) == set(b)
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-6, err_msg=name)
  m_resumed, m_full = _metrics(interrupted), _metrics(straight)
  assert sorted(m_resumed) == sorted(m_full) == list(range(1, steps + 1))
  for step in m_full:
    assert m_resumed[step] == pytest.approx(m_full[step], rel=1e-6, abs=1e-6), step
  assert m_full[steps]["kl_mean"] > 0  # the reference and the old log-probs were used


@pytest.mark.parametrize("eval_workers,expected", [(0, 0), (-1, 2)])
def test_held_out_prompts_are_read_with_the_eval_workers(judge, tmp_path, monkeypatch,
                                                         eval_workers, expected):
  asked = []  # (split, worker_count) per prompt dataset the loop builds
  real = rollout.make_prompt_dataset

  def spy(records, encoder, **kw):
    asked.append(("eval" if kw.get("num_epochs") == 1 else "train", kw["worker_count"]))
    return real(records, encoder, **{**kw, "worker_count": 0})  # no processes started

  monkeypatch.setattr(rollout, "make_prompt_dataset", spy)
  config = _set(_config("grpo"), train__num_steps=2, data__worker_count=2,
                data__eval_worker_count=eval_workers,
                **{**judge.overrides(), "eval__num_prompts": 8, "optim__warmup_steps": 1})
  summary = grpo_loop.run(config, str(tmp_path))
  assert sorted(asked) == [("eval", expected), ("train", 2)]
  assert sorted(summary["eval"]["prompts"]["index"]) == list(range(8))
