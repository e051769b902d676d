"""Processes agree on each batch's buckets, and a disagreement is one clear error."""

import pytest

from tests.multihost import harness


@pytest.fixture(scope="module")
def batch_plan(two_process_checks) -> list[dict]:
  """Each process's results of the batch-plan checks (`tasks.group_checks`)."""
  return two_process_checks


def test_buckets_agreed_across_processes(batch_plan):
  results = [r["agreed_buckets"] for r in batch_plan]
  # On its own, process 0's 6-token row would pad to 8 and process 1's to 32.
  assert [r[0] for r in results] == [[2, 8], [2, 32]]
  assert [r[1] for r in results] == [[2, 32], [2, 32]]


def test_mismatched_shapes_raise_one_clear_error(batch_plan):
  results = [r["mismatched_batch"] for r in batch_plan]
  assert results[0] == results[1]
  assert "processes disagree on the shapes of this step's batch" in results[0]
  assert "input_ids(4, 16)" in results[0] and "input_ids(4, 32)" in results[0]


def test_a_dead_process_fails_the_group_fast(tmp_path):
  """A crash ends the group at once, with every process's log tail."""
  import time

  start = time.monotonic()
  with pytest.raises(harness.ProcessGroupError) as info:
    harness.run_cli(2, ["--config=configs/rm.py:tiny", f"--workdir={tmp_path}",
                        "--config.data.batch_size=7"], timeout=120)
  assert time.monotonic() - start < 60
  assert "process 0" in str(info.value) and "process 1" in str(info.value)
  assert "bad setting: data.batch_size=7: must be a multiple of the 2 processes" in str(
      info.value)


def test_fewer_rows_than_devices_are_replicated_on_every_process(batch_plan):
  results = [r["few_rows"] for r in batch_plan]
  assert results == [[0, 1, 10, 11], [0, 1, 10, 11]]
