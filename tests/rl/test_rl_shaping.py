"""Dynamic sampling, overlong penalty and truncation masking."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from omni_rrm_jax.rl.shaping import (fill_groups, mask_truncated, nonzero_variance_groups,
                                     overlong_penalty)


def test_nonzero_variance_groups():
  rewards = np.array([1, 1, 1, 0, 1, 0, 0.3, 0.3, 0.3, 0, 0, 1e-7], np.float32)
  keep = jax.jit(nonzero_variance_groups, static_argnums=1)(rewards, 3)
  np.testing.assert_array_equal(keep, [False, True, False, True])
  with pytest.raises(ValueError, match="not a multiple of group_size 5"):
    nonzero_variance_groups(rewards, 5)


def _stream(*reward_rows, start=0):
  """Batches of groups of 2; `ids` numbers samples so the kept ones can be traced."""
  i = start
  for rewards in reward_rows:
    n = len(rewards)
    yield {"rewards": np.array(rewards, np.float32), "ids": np.arange(i, i + n),
           "tokens_bt": np.zeros((n, 3), np.int32)}
    i += n


def test_fill_groups_reaches_target_and_trims():
  # Round 1 keeps group 1 (ids 2, 3); round 2 keeps groups 0 and 2 (ids 6, 7
  # and 10, 11); the target of 3 is met, the later groups are cut.
  stream = _stream([1, 1, 0, 1, 0, 0], [1, 0, 1, 1, 0.5, 0, 1, 0], [0, 1, 0, 1])
  out = fill_groups(stream, group_size=2, target_groups=3, max_rounds=5)
  assert (out.num_groups, out.rounds, out.num_seen_groups) == (3, 2, 7)
  np.testing.assert_array_equal(out.batch["ids"], [2, 3, 6, 7, 10, 11])
  np.testing.assert_array_equal(out.batch["rewards"], [0, 1, 1, 0, 0.5, 0])
  assert out.batch["tokens_bt"].shape == (6, 3)


def test_fill_groups_round_cap():
  stream = _stream([1, 1, 0, 1], [1, 1, 0, 0], [0, 1, 1, 0])
  out = fill_groups(stream, group_size=2, target_groups=3, max_rounds=2)
  assert (out.num_groups, out.rounds, out.num_seen_groups) == (1, 2, 4)
  np.testing.assert_array_equal(out.batch["ids"], [2, 3])


def test_fill_groups_nothing_kept_keeps_keys():
  out = fill_groups(_stream([1, 1], [0, 0]), group_size=2, target_groups=1, max_rounds=9)
  assert (out.num_groups, out.rounds) == (0, 2)
  assert out.batch["tokens_bt"].shape == (0, 3)


def test_fill_groups_min_spread_drops_groups_that_differ_by_noise():
  # Group spreads 0.03 (score noise), 0.4 (a verdict flip), 0.0, 0.15, 1.0 and 0.0.
  rows = ([0.93, 0.96, 0.5, 0.9], [0.7, 0.7, 0.6, 0.75], [0.0, 1.0, 0.5, 0.5])
  out = fill_groups(_stream(*rows), group_size=2, target_groups=3, max_rounds=5,
                    min_spread=0.2)
  # Kept: the 0.4 group (ids 2, 3) and the 1.0 group (ids 8, 9).
  np.testing.assert_array_equal(out.batch["ids"], [2, 3, 8, 9])
  assert (out.num_groups, out.rounds, out.num_seen_groups) == (2, 3, 6)
  # The control: without a minimum every group with any spread is kept.
  out = fill_groups(_stream(*rows), group_size=2, target_groups=3, max_rounds=5)
  np.testing.assert_array_equal(out.batch["ids"], [0, 1, 2, 3, 6, 7])
  with pytest.raises(ValueError, match="min_spread"):
    fill_groups(_stream(*rows), 2, 1, max_rounds=1, min_spread=-0.1)


def test_fill_groups_errors():
  with pytest.raises(ValueError, match="leading dim"):
    fill_groups([{"rewards": np.zeros(4), "x": np.zeros(3)}], 2, 1, max_rounds=1)
  with pytest.raises(ValueError, match="max_rounds"):
    fill_groups([], 2, 1, max_rounds=0)


def test_overlong_penalty_by_hand():
  # max_len 10, cache 4: free up to 6, then -1/4 per token, -1 past 10.
  lengths = np.array([0, 6, 7, 8, 9, 10, 11, 50])
  pen = jax.jit(overlong_penalty, static_argnums=(1, 2))(lengths, 10, 4)
  np.testing.assert_allclose(pen, [0, 0, -0.25, -0.5, -0.75, -1, -1, -1], rtol=1e-7)
  np.testing.assert_array_equal(overlong_penalty(lengths, 10, 0), [0, 0, 0, 0, 0, 0, -1, -1])
  with pytest.raises(ValueError, match="cache_len"):
    overlong_penalty(lengths, 4, 5)


@pytest.mark.parametrize("dtype", [np.float32, np.bool_])
def test_mask_truncated(dtype):
  mask = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype)
  out = mask_truncated(mask, np.array([False, True, False]))
  assert out.dtype == dtype
  np.testing.assert_array_equal(out, np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype))
