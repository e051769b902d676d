"""Bad settings stop a run before any work, with one line naming the key."""

import os

import pytest

from tests.e2e.runs import cli


@pytest.mark.parametrize("config,override,line", [
    ("rm.py:tiny", "--config.data.max_length=-5",
     "omni-rrm: error: bad setting: data.max_length=-5: must be a finite number > 0"),
    ("grpo.py:tiny", "--config.optim.learning_rate=nan",
     "omni-rrm: error: bad setting: optim.learning_rate=nan: must be a finite number > 0"),
])
def test_bad_setting_is_refused_before_data_or_model(tmp_path, config, override, line):
  workdir = tmp_path / "run"
  out = cli(config, str(workdir), override, "--config.train.progress_bar=False", timeout=300)
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1] == line, out.stderr[-2000:]
  # Nothing was generated, trained or exported.
  assert not os.path.exists(workdir / "data") and not os.path.exists(workdir / "hf")
