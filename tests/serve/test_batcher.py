"""Dynamic batching: concurrent requests share calls within the row, token and wait limits."""

from __future__ import annotations

import asyncio
import time

from omni_rrm_jax.serve.batcher import DynamicBatcher


def _batcher(calls, **kw):
  def run(rows):
    calls.append(list(rows))
    time.sleep(0.01)
    return [r * 10 for r in rows]

  return DynamicBatcher(run, size_of=lambda r: r, **{"max_rows": 4, "max_tokens": 100,
                                                      "max_wait_s": 0.05, **kw})


def test_rows_of_concurrent_requests_share_calls_up_to_max_rows():
  calls = []

  async def main():
    b = _batcher(calls)
    await b.start()
    results = await asyncio.gather(*(b.submit([i, i + 1]) for i in range(0, 10, 2)))
    await b.stop()
    return results

  results = asyncio.run(main())
  assert results == [[0, 10], [20, 30], [40, 50], [60, 70], [80, 90]]  # each its own, in order
  assert [len(c) for c in calls] == [4, 4, 2]
  assert sorted(r for c in calls for r in c) == list(range(10))


def test_token_budget_closes_a_batch_and_a_lone_row_does_not_wait_forever():
  calls = []

  async def main():
    b = _batcher(calls, max_tokens=50)
    await b.start()
    first = await b.submit([30, 30, 30])  # 60 tokens never fit one call of 50
    t = time.perf_counter()
    lone = await b.submit([7])
    waited = time.perf_counter() - t
    await b.stop()
    return first, lone, waited

  first, lone, waited = asyncio.run(main())
  assert first == [300, 300, 300] and lone == [70]
  assert calls == [[30], [30], [30], [7]]
  assert waited < 1.0  # max_wait_s, plus the call


def test_rows_of_a_request_that_gave_up_are_not_scored():
  calls = []

  async def main():
    b = _batcher(calls, max_wait_s=0.2)
    await b.start()
    try:
      await asyncio.wait_for(b.submit([1, 2]), 0.05)  # gives up while its batch waits
    except asyncio.TimeoutError:
      pass
    kept = await b.submit([3])
    await b.stop()
    return kept

  assert asyncio.run(main()) == [30]
  assert calls == [[3]]


def test_row_buckets_are_shard_multiples_doubling_up_to_the_maximum():
  from omni_rrm_jax.serve.scorers import row_buckets

  assert row_buckets(16, 1) == (1, 2, 4, 8, 16)
  assert row_buckets(12, 4) == (4, 8, 12)
  assert row_buckets(8, 8) == (8,)
