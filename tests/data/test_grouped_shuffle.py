"""Batches drawn one modality at a time: order, coverage, workers and resume."""

import numpy as np
import pytest

from omni_rrm_jax.core.batch_contract import RM_BATCH
from omni_rrm_jax.data.grouped_shuffle import grouped_order
from omni_rrm_jax.data.pipeline import make_dataset
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.tokenize import ExampleEncoder

KINDS = ("text", "image", "video", "audio")


def test_grouped_order_is_a_seeded_permutation_in_single_group_chunks():
  groups = np.repeat(np.arange(3), [13, 9, 20])  # 42 indices, chunks of 4
  order = grouped_order(groups, 4, seed=5, epoch=0)
  assert len(order) == 40 and len(set(order.tolist())) == 40
  chunks = order.reshape(-1, 4)
  mixed = [c for c in chunks if len(set(groups[c])) > 1]
  # Full chunks per group: 3 + 2 + 5; the 1 + 1 + 0 left over fill no chunk.
  assert len(chunks) - len(mixed) == 10 and not mixed
  np.testing.assert_array_equal(order, grouped_order(groups, 4, seed=5, epoch=0))
  assert (order != grouped_order(groups, 4, seed=5, epoch=1)).any()
  assert (order != grouped_order(groups, 4, seed=6, epoch=0)).any()
  # Leftovers of several groups share mixed chunks instead of being lost.
  groups = np.repeat(np.arange(3), [6, 6, 6])
  chunks = grouped_order(groups, 4, seed=0, epoch=0).reshape(-1, 4)
  assert len(chunks) == 4 and sum(len(set(groups[c])) > 1 for c in chunks) == 1


def _records(n):
  # Text-only records labelled with a modality: grouping reads only the label.
  return [PreferenceRecord(id=str(i), prompt=f"what is {i} plus 1?", response_a=f"it is {i + 1}.",
                           response_b=f"it is {i + 7}.", label="A", modality=KINDS[i % 4])
          for i in range(n)]


def _rows(batch):
  return [int(i) for i, v in zip(batch["index"], batch["valid"]) if v]


def test_batches_hold_one_modality_and_cover_the_epoch(tok):
  recs = _records(40)  # 10 per modality, batches of 4: 2 full each, 8 left over
  enc = ExampleEncoder(tok, max_length=64, kind=RM_BATCH)
  kw = dict(batch_size=4, buckets=(64,), pad_id=tok.pad_token_id, seed=2, group_by_modality=True)
  it = iter(make_dataset(recs, enc, **kw))
  epoch = [_rows(next(it)) for _ in range(10)]
  kinds = [{recs[i].modality for i in rows} for rows in epoch]
  assert sum(len(k) == 1 for k in kinds) >= 8  # 8 single-modality, 2 of leftovers
  seen = [i for rows in epoch for i in rows]
  assert len(seen) == len(set(seen)) == 40
  second = [_rows(next(it)) for _ in range(10)]
  assert sorted(i for rows in second for i in rows) == list(range(40))
  assert second != epoch  # reshuffled

  # Workers take whole batches in turn: the same stream as in-process.
  workers = iter(make_dataset(recs, enc, worker_count=2, **kw))
  assert [_rows(next(workers)) for _ in range(10)] == epoch

  # Resume from a state mid-epoch continues with the same batches.
  it = iter(make_dataset(recs, enc, worker_count=2, **kw))
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [_rows(next(it)) for _ in range(9)]
  resumed = iter(make_dataset(recs, enc, worker_count=2, **kw))
  resumed.set_state(state)
  assert [_rows(next(resumed)) for _ in range(9)] == expected


def test_two_processes_share_each_global_batch_of_one_modality(tok):
  recs = _records(48)
  enc = ExampleEncoder(tok, max_length=64, kind=RM_BATCH)
  kw = dict(batch_size=2, buckets=(64,), pad_id=tok.pad_token_id, seed=4, num_epochs=1,
            group_by_modality=True, agree=lambda needs: needs)
  p0, p1 = (list(make_dataset(recs, enc, process_index=p, process_count=2, **kw))
            for p in (0, 1))
  assert len(p0) == len(p1) == 12
  for a, b in zip(p0, p1):
    rows = _rows(a) + _rows(b)
    assert len(rows) == 4 and len({recs[i].modality for i in rows}) == 1
    assert not set(_rows(a)) & set(_rows(b))


def test_block_shuffle_keeps_each_pair_and_its_twin_in_one_batch(tok):
  recs = _records(48)  # records 2k and 2k + 1 form a block
  enc = ExampleEncoder(tok, max_length=64, kind=RM_BATCH)
  kw = dict(batch_size=4, buckets=(64,), pad_id=tok.pad_token_id, seed=3, shuffle_block=2)
  it = iter(make_dataset(recs, enc, **kw))
  epoch = [_rows(next(it)) for _ in range(12)]
  for rows in epoch:  # whole blocks, each in its order
    assert [r // 2 for r in rows[::2]] == [r // 2 for r in rows[1::2]]
    assert all(r % 2 == 0 for r in rows[::2])
  assert sorted(i for rows in epoch for i in rows) == list(range(48))
  assert [r for rows in epoch for r in rows] != list(range(48))  # shuffled
  second = [_rows(next(it)) for _ in range(12)]
  assert second != epoch and sorted(i for rows in second for i in rows) == list(range(48))
  # Two processes each take whole blocks of every global batch.
  p0, p1 = (list(make_dataset(recs, enc, process_index=p, process_count=2, num_epochs=1,
                              agree=lambda needs: needs, **{**kw, "batch_size": 2}))
            for p in (0, 1))
  for a, b in zip(p0, p1):
    for rows in (_rows(a), _rows(b)):
      assert len(rows) == 2 and rows[0] // 2 == rows[1] // 2 and rows[0] % 2 == 0
  # Blocks that cannot stay whole are refused before any batch is made.
  with pytest.raises(ValueError, match="shuffle_block 2 must divide"):
    make_dataset(recs, enc, **{**kw, "batch_size": 3})
  with pytest.raises(ValueError, match="not whole blocks of 2"):
    next(iter(make_dataset(recs[:47], enc, **kw)))
