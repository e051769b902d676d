"""GRPO and the judge eval on 2 processes x 4 devices equal 1 process x 8 devices.

GRPO runs the judge recipe on a random tiny policy with dynamic sampling
(refill rounds decided on the global batch), overlong shaping (which gives
the groups their reward spread: a random policy rarely stops early), a KL
term, two minibatches per step (each process feeds its share of every global
minibatch) and a model reward (a random scalar RM, scored where each
completion was sampled and logged at weight 0, so the rewards of a group can
still tie). Same mesh shape (data=8), same prompts per global step: the
exported weights agree within 1e-5, the metrics rows (rewards, groups kept,
refill rounds, losses) and the summary counts are the same. The judge eval
counts every record once, and an RM scores uneven shares of rows per process
as one process scores them all.
"""

import json
import os

import numpy as np
import pytest

from tests.multihost import harness, runs

STEPS = 2
PROMPTS, G = 8, 4


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory) -> str:
  import omni_rrm_jax as orj
  from omni_rrm_jax.synthetic.mixture import mixed_pairs
  from omni_rrm_jax.synthetic.corpus import corpus
  from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
  from omni_rrm_jax.models.hf_save import save_pretrained
  from transformers import AutoTokenizer

  root = tmp_path_factory.mktemp("rm")
  train_tiny_tokenizer(corpus(mixed_pairs(200, 0, ["colour"])), root / "tok",
                       vocab_size=400)
  tok = AutoTokenizer.from_pretrained(root / "tok")
  model = orj.from_config("Qwen2ForSequenceClassification", dict(
      vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
      num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
      num_labels=1, tie_word_embeddings=False), seed=3)
  save_pretrained(model, str(root / "hf"), tokenizer_dir=str(root / "tok"))
  return str(root / "hf")


def _grpo_args(workdir: str, rm: str) -> list[str]:
  args = {"config": "configs/grpo.py:tiny", "workdir": workdir,
          "config.train.num_steps": STEPS, "config.train.progress_bar": False,
          "config.data.synthetic_train": 200, "config.data.synthetic_eval": 16,
          "config.rollout.prompts_per_step": PROMPTS, "config.rollout.num_generations": G,
          "config.rollout.max_new_tokens": 32, "config.optim.warmup_steps": 0,
          "config.reward.functions": "judge_format:1.0",
          "config.shaping.dynamic_sampling": True, "config.shaping.max_rounds": 3,
          "config.shaping.overlong_penalty": True, "config.shaping.overlong_cache": 32,
          "config.grpo.beta": 0.05, "config.grpo.num_minibatches": 2,
          "config.reward.model_path": rm, "config.reward.model_weight": 0.0,
          "config.reward.model_batch_size": 8, "config.reward.model_max_length": 128,
          "config.reward.model_bucket": 32, "config.eval.num_prompts": 8}
  return [f"--{k}={v}" for k, v in args.items()]


@pytest.fixture(scope="module")
def grpo_reference(rm_folder, tmp_path_factory) -> str:
  workdir = str(tmp_path_factory.mktemp("grpo_one"))
  harness.run_cli(1, _grpo_args(workdir, rm_folder))
  return workdir


def _without_timings(rows: list[dict]) -> list[dict]:
  return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_grpo_two_processes_equal_one(grpo_reference, rm_folder, tmp_path):
  workdir = str(tmp_path / "grpo_two")
  outputs = harness.run_cli(2, _grpo_args(workdir, rm_folder))
  runs.assert_same_weights(runs.exported(workdir), runs.exported(grpo_reference))
  one = _without_timings(runs.metric_rows(grpo_reference))
  two = _without_timings(runs.metric_rows(workdir))
  runs.assert_same_rows(two, one)
  train = [r for r in one if r["split"] == "train"]
  assert [r["step"] for r in train] == list(range(1, STEPS + 1))
  # Dynamic sampling had groups to drop and refilled; the model reward was scored.
  assert any(r["zero_variance_group_frac"] > 0 for r in train)
  assert any(r["rollout_rounds"] > 1 for r in train)
  assert all(r["loss_batch/zero_variance_groups"] == 0 for r in train)
  assert all(r["reward/model_reward_std"] > 0 for r in train)
  assert all(r["kl_mean"] >= 0 for r in train) and train[-1]["kl_mean"] > 0
  summary_one, summary_two = runs.summary(grpo_reference), runs.summary(workdir)
  for key in ("step", "stopped_early", "bad_records", "skipped_prompts"):
    assert summary_two[key] == summary_one[key], key
  assert summary_two["eval"] == pytest.approx(summary_one["eval"], rel=1e-4, abs=1e-4)
  # Both processes return the same summary; only process 0 wrote files.
  assert all(f'"step": {STEPS}' in out for out in outputs)


def _eval_args(workdir: str, judge: str, data: str) -> list[str]:
  args = {"config": "configs/eval.py", "workdir": workdir, "config.model.path": judge,
          "config.data.path": data, "config.data.limit": 13, "config.data.batch_size": 8,
          "config.data.max_length": 352, "config.judge.max_new_tokens": 8}
  return [f"--{k}={v}" for k, v in args.items()]


def test_judge_eval_counts_every_record_once(grpo_reference, tmp_path):
  judge = os.path.join(grpo_reference, "hf")
  data = os.path.join(grpo_reference, "data", "eval.jsonl")
  reports = []
  for n in (1, 2):
    workdir = str(tmp_path / f"eval_{n}")
    # 13 records in global batches of 8: the last one is short (fillers).
    harness.run_cli(n, _eval_args(workdir, judge, data))
    with open(os.path.join(workdir, "eval_report.json"), encoding="utf-8") as f:
      reports.append(json.load(f))
  one, two = reports
  assert one["records"] == two["records"] == 13
  assert two["overall"]["count"] == one["overall"]["count"] == 13
  for report in reports:  # wall-clock times differ from run to run; their counts may not
    for key in [k for k in report["latency"] if k.endswith(("_ms", "_seconds"))]:
      del report["latency"][key]
  assert two == one


def _scores(rm: str, rows: slice) -> list[float]:
  """RM scores of rows `rows` of 16 fixed completions, on a data=8 mesh."""
  from omni_rrm_jax.rl.model_reward import ModelReward
  from omni_rrm_jax.sharding.mesh import make_mesh

  prompts = [f"What colour is item {i}?" for i in range(16)]
  completions = [("It is blue. " * (i % 5)).strip() or "No idea." for i in range(16)]
  reward = ModelReward(rm, batch_size=8, max_length=64, bucket=16, mesh=make_mesh())
  return [float(x) for x in reward(prompts[rows], completions[rows])]


def score_shares(rm: str, rows_per_process: list[int]) -> list[float]:
  """This process's share of the rows, scored (run in each process of a group)."""
  import jax

  start = sum(rows_per_process[:jax.process_index()])
  return _scores(rm, slice(start, start + rows_per_process[jax.process_index()]))


def test_model_reward_scores_uneven_shares_as_one_process(rm_folder):
  # 3 rows on one process and 13 on the other: they agree on 2 passes of 8.
  two = harness.run_function(2, "tests.multihost.test_grpo:score_shares",
                             {"rm": rm_folder, "rows_per_process": [3, 13]})
  one = _scores(rm_folder, slice(0, 16))  # here: one process, 8 devices
  assert [len(s) for s in two] == [3, 13]
  np.testing.assert_allclose(two[0] + two[1], one, atol=1e-5, rtol=0)
  assert np.std(one) > 1e-4
