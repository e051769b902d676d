"""The packer: no example lost or split, chosen and rejected aligned, deterministic."""

import numpy as np
import pytest

from omni_rrm_jax.core.batch_contract import RM_BATCH, SFT_BATCH
from omni_rrm_jax.data.packing import (collate_packed, first_fit_decreasing, rows_for,
                                       segment_key)


def _pairs(seed: int, n: int):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    out.append({"chosen": rng.integers(1, 50, rng.integers(1, 17)).astype(np.int32),
                "rejected": rng.integers(1, 50, rng.integers(1, 17)).astype(np.int32),
                "margin": float(i), "valid": i % 5 != 4, "truncated": i % 3 == 0,
                "invalid_reason": 0, "modality": 0, "index": 100 + i})
  return out


@pytest.mark.parametrize("seed", range(5))
def test_first_fit_decreasing_keeps_every_example_within_capacity(seed):
  rng = np.random.default_rng(seed)
  sizes = list(rng.integers(1, 33, 40))
  rows = first_fit_decreasing(sizes, capacity=64, max_segments=5)
  assert sorted(i for row in rows for i in row) == list(range(40))
  assert all(sum(sizes[i] for i in row) <= 64 and len(row) <= 5 for row in rows)
  assert all(row == sorted(row) for row in rows)
  assert rows == first_fit_decreasing(sizes, capacity=64, max_segments=5)
  # Items of at most capacity / m fill closed rows with >= m items: at most ceil(n / m) rows.
  assert len(rows) <= -(-40 // 2)


def test_first_fit_decreasing_refuses_an_example_longer_than_a_row():
  with pytest.raises(ValueError, match="does not fit a packed row of 8"):
    first_fit_decreasing([3, 9], capacity=8, max_segments=4)


def test_rows_round_up_to_the_multiple():
  assert [rows_for(n, 4) for n in (0, 1, 4, 5, 8)] == [4, 4, 4, 8, 8]


def test_packed_pairs_hold_every_example_whole_and_aligned():
  examples = _pairs(0, 12)
  filler = dict(examples[0], index=-1, valid=False)
  batch = collate_packed(examples + [filler], kind=RM_BATCH, num_rows=8, length=32,
                         max_segments=4, pad_id=0)
  assert batch["chosen_input_ids"].shape == (8, 32) and batch["valid"].shape == (8, 4)
  seen = []
  for r, j in zip(*np.nonzero(batch["index"] >= 0)):
    ex = examples[batch["index"][r, j] - 100]
    seen.append(int(batch["index"][r, j]))
    assert batch["margin"][r, j] == ex["margin"] and batch["valid"][r, j] == ex["valid"]
    assert batch["truncated"][r, j] == ex["truncated"]
    for field in ("chosen", "rejected"):
      seg = batch[segment_key(field)][r]
      # Segment j + 1 of the chosen row and of the rejected row is the same pair, in one piece.
      where = np.nonzero(seg == j + 1)[0]
      assert list(where) == list(range(where[0], where[0] + len(ex[field])))
      np.testing.assert_array_equal(batch[f"{field}_input_ids"][r, where], ex[field])
      assert batch[f"{field}_attention_mask"][r, where].all()
  assert sorted(seen) == [100 + i for i in range(12)]  # the filler is left out
  for field in ("chosen", "rejected"):
    np.testing.assert_array_equal(batch[f"{field}_attention_mask"],
                                  batch[segment_key(field)] > 0)
  assert not batch["valid"][batch["index"] < 0].any()


def test_packed_targets_follow_their_tokens():
  examples = [{"input_ids": np.arange(1, 1 + n, dtype=np.int32),
               "loss_mask": np.asarray([0] * (n - 2) + [1, 1], np.int32), "valid": True,
               "truncated": False, "invalid_reason": 0, "modality": 0, "index": i}
              for i, n in enumerate((5, 3, 7, 4))]
  batch = collate_packed(examples, kind=SFT_BATCH, num_rows=2, length=10, max_segments=4,
                         pad_id=0)
  for r in range(2):
    for j in range(1, batch["segment_ids"][r].max() + 1):
      ex = examples[batch["index"][r, j - 1]]
      where = batch["segment_ids"][r] == j
      np.testing.assert_array_equal(batch["input_ids"][r, where], ex["input_ids"])
      np.testing.assert_array_equal(batch["loss_mask"][r, where], ex["loss_mask"])
  assert batch["loss_mask"][batch["segment_ids"] == 0].sum() == 0


def test_too_few_rows_is_an_error():
  with pytest.raises(ValueError, match="need 3 packed rows, only 2"):
    collate_packed(_pairs(1, 3), kind=RM_BATCH, num_rows=2, length=16, max_segments=1, pad_id=0)
