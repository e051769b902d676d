"""The main job's smoke variant on 2 processes x 4 devices equals 1 process x 8.

Slow (two smoke runs, several minutes on 2 cores): `python -m pytest -m slow
tests/multihost/test_demo.py`.
"""

import json

import pytest

from tests.multihost import harness, runs


@pytest.mark.slow
def test_demo_smoke_two_processes_equal_one(tmp_path):
  reports, dirs = [], []
  for n in (1, 2):
    workdir = str(tmp_path / f"demo{n}")
    harness.run_cli(n, ["demo", f"--workdir={workdir}",
                        "--config=omni_rrm_jax/demo/config.py:smoke"], timeout=900)
    with open(f"{workdir}/report.json", encoding="utf-8") as f:
      reports.append(json.load(f))
    dirs.append(workdir)
  one, two = reports
  for key in ("data", "rm", "blind", "judge_sft", "judge_grpo", "grpo_rewards", "targets"):
    assert two[key] == one[key], key
  for stage in ("rm", "sft", "grpo"):
    runs.assert_same_weights(runs.exported(f"{dirs[1]}/{stage}"),
                             runs.exported(f"{dirs[0]}/{stage}"))
