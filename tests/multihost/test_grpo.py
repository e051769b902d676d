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

from tests.multihost import harness, runs, tasks

STEPS = 2
PROMPTS, G = 8, 4


@pytest.fixture(scope="module")
def rm_folder(tiny_rm_folder) -> str:
  return tiny_rm_folder


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
  scalars = [{k: v for k, v in s["eval"].items() if k != "prompts" and not k.startswith("time/")}
             for s in (summary_one, summary_two)]
  assert scalars[1] == pytest.approx(scalars[0], rel=1e-4, abs=1e-4)
  # Every held-out prompt's rewards, in the same order, on any number of processes.
  prompts_one, prompts_two = summary_one["eval"]["prompts"], summary_two["eval"]["prompts"]
  assert prompts_two["index"] == prompts_one["index"] and len(prompts_one["index"]) == 8
  assert prompts_two["modality"] == prompts_one["modality"]
  assert sorted(prompts_two) == sorted(prompts_one)
  for name in set(prompts_one) - {"index", "modality"}:
    assert prompts_two[name] == pytest.approx(prompts_one[name], rel=1e-4, abs=1e-4), name
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


def test_model_reward_scores_uneven_shares_as_one_process(two_process_checks, rm_folder):
  # 3 rows on one process and 13 on the other: they agree on 2 passes of 8.
  two = [r["model_reward"] for r in two_process_checks]
  one = tasks.rows_scores(rm_folder, slice(0, 16))  # here: one process, 8 devices
  assert [len(s) for s in two] == [3, 13]
  np.testing.assert_allclose(two[0] + two[1], one, atol=1e-5, rtol=0)
  assert np.std(one) > 1e-4
