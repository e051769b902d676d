"""Settings of several main-job stages that must agree are refused before any stage runs."""

import os

import pytest

from omni_rrm_jax.demo import run as demo
from omni_rrm_jax.demo.config import get_config


def test_grpo_samples_twins_by_default():
  config = get_config()
  assert demo.grpo_on_twins(config) and config.data.swap_twins
  demo.check_config(config)  # the default agrees with itself


@pytest.mark.parametrize("change, message", [
    (dict(swap_twins=False), "needs data.swap_twins=True"),
    (dict(block=4), "must be 1 or 2"),
])
def test_grpo_twin_blocks_need_the_twin_file(change, message, tmp_path):
  config = get_config("smoke")
  config.data.swap_twins = change.get("swap_twins", True)
  config.grpo.data.shuffle_block = change.get("block", 2)
  with pytest.raises(SystemExit, match=message):
    demo.run(config, str(tmp_path))
  assert not os.listdir(tmp_path)  # refused before the data stage wrote anything


def test_grpo_without_blocks_needs_no_twins():
  config = get_config("smoke")
  config.data.swap_twins = False
  config.grpo.data.shuffle_block = 1
  assert not demo.grpo_on_twins(config)
  demo.check_config(config)


def test_intervals_follow_a_step_count_set_by_flag(tmp_path):
  from absl import flags
  from ml_collections import config_flags

  path = os.path.join(os.path.dirname(demo.__file__), "config.py")
  argv = ["omni-rrm", f"--config={path}", "--config.grpo.train.num_steps=30",
          "--config.rm.train.num_steps=100", "--config.rm.checkpoint.every=7"]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", default=None, flag_values=values, sys_argv=argv)
  values(argv)
  config = values.config
  # About 4 checkpoints a stage, 2 evaluations and 30 log lines, rounded up.
  assert config.grpo.checkpoint.every == 8  # 30 steps (the default's 6 gave 2)
  assert (config.rm.train.log_every, config.rm.train.eval_every) == (4, 50)
  assert config.rm.checkpoint.every == 7  # set by its own flag
  assert (config.sft.train.eval_every, config.sft.checkpoint.every) == (500, 250)  # defaults
  stage = demo._stage_config(config.grpo, demo.Paths(str(tmp_path)))
  assert stage.checkpoint.every == 8 and isinstance(stage.checkpoint.every, int)
