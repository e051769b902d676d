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
