"""One 2-process group shared by the multi-process tests that check plain functions."""

import pytest

from tests.multihost import harness

# Rows of the 16 scored completions on each process: uneven shares.
MODEL_REWARD_ROWS = [3, 13]


@pytest.fixture(scope="session")
def two_process_checks(tiny_rm_folder) -> list[dict]:
  """Each process's results of `tasks.group_checks` (batch plan and model reward
  shares), from one 2-process group."""
  return harness.run_function(2, "tests.multihost.tasks:group_checks",
                              {"rm": tiny_rm_folder, "rows_per_process": MODEL_REWARD_ROWS},
                              timeout=300)
