"""Processes agree on each batch's buckets, and a disagreement is one clear error."""

from tests.multihost import harness


def test_buckets_agreed_across_processes():
  results = harness.run_function(2, "tests.multihost.tasks:agreed_buckets", timeout=120)
  # On its own, process 0's 6-token row would pad to 8 and process 1's to 32.
  assert [r[0] for r in results] == [[2, 8], [2, 32]]
  assert [r[1] for r in results] == [[2, 32], [2, 32]]


def test_mismatched_shapes_raise_one_clear_error():
  results = harness.run_function(2, "tests.multihost.tasks:mismatched_batch", timeout=120)
  assert results[0] == results[1]
  assert "processes disagree on the shapes of this step's batch" in results[0]
  assert "input_ids(4, 16)" in results[0] and "input_ids(4, 32)" in results[0]


def test_a_dead_process_fails_the_group_fast(tmp_path):
  """A crash ends the group at once, with every process's log tail."""
  import time

  import pytest
  start = time.monotonic()
  with pytest.raises(harness.ProcessGroupError) as info:
    harness.run_cli(2, ["--config=configs/rm.py:tiny", f"--workdir={tmp_path}",
                        "--config.data.batch_size=7"], timeout=120)
  assert time.monotonic() - start < 60
  assert "process 0" in str(info.value) and "process 1" in str(info.value)
  assert "bad setting: data.batch_size=7: must be a multiple of the 2 processes" in str(
      info.value)


def test_fewer_rows_than_devices_are_replicated_on_every_process():
  results = harness.run_function(2, "tests.multihost.tasks:few_rows", timeout=120)
  assert results == [[0, 1, 10, 11], [0, 1, 10, 11]]
