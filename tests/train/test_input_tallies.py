"""The loop's host-side tallies: tokens of real rows only, the tokens-per-second rate and
the share of time spent waiting for batches."""

import numpy as np

from omni_rrm_jax.train import input_tallies
from omni_rrm_jax.train.input_tallies import DataWait, InputCounts, TokenRate


def _rm_batch():
  # Two real rows and one padding row (index -1) whose masks are not all zero.
  return {
      "index": np.array([0, 1, -1]),
      "valid": np.array([True, True, False]),
      "truncated": np.array([False, True, False]),
      "invalid_reason": np.zeros(3, np.int32),
      "chosen_attention_mask": np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]),
      "rejected_attention_mask": np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]),
      # audio frames are not tokens
      "feature_attention_mask": np.ones((3, 50), np.int32),
  }


def test_tokens_count_real_rows_of_every_token_sequence():
  counts = InputCounts()
  counts.add(_rm_batch())
  counts.add(_rm_batch())
  assert counts.tokens == 2 * (3 + 2 + 2 + 4)
  assert counts.examples == 4 and counts.truncated == 2


def test_token_rate_is_per_interval_and_scales_with_processes(monkeypatch):
  clock = iter([10.0, 12.0, 13.0])
  monkeypatch.setattr(input_tallies.time, "perf_counter", lambda: next(clock))
  rate = TokenRate(num_processes=2)       # reads 10.0
  assert rate.rate(100) == 2 * 100 / 2.0  # 100 tokens in 2 s on each of 2 processes
  assert rate.rate(130) == 2 * 30 / 1.0   # only the tokens since the previous reading


def test_data_wait_is_the_share_of_each_interval_spent_in_next(monkeypatch):
  # Readings: construction 0; next() from 1 to 4; fraction at 5; next() from 6 to 6.5;
  # fraction at 10.
  clock = iter([0.0, 1.0, 4.0, 5.0, 6.0, 6.5, 10.0])
  monkeypatch.setattr(input_tallies.time, "perf_counter", lambda: next(clock))
  wait = DataWait()
  batches = iter(["a", "b"])
  assert wait.next(batches) == "a"
  assert wait.fraction() == 3.0 / 5.0
  assert wait.next(batches) == "b"
  assert wait.fraction() == 0.5 / 5.0  # only the waiting since the previous reading
