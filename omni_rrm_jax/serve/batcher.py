"""Dynamic batching: rows of concurrent requests share one model call.

Every request puts its encoded rows on one queue, each with a future. One
worker takes the first waiting row, then keeps taking rows until the batch
holds `max_rows` rows or `max_tokens` tokens, or `max_wait_s` has passed since
the first, and runs the model on a thread of its own (the event loop keeps
accepting requests meanwhile). Rows whose request gave up (timed out, client
gone) are dropped before they cost a model call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)


class ModelCallFailed(RuntimeError):
  """The model call holding a request's rows raised (the server goes on)."""


@dataclasses.dataclass
class _Row:
  row: Any
  size: int
  future: asyncio.Future


class DynamicBatcher:
  """Args:
    run: `rows -> one result per row`, the model call (blocking).
    size_of: a row's token count, against `max_tokens`.
    max_rows: rows per call at most.
    max_tokens: tokens per call at most (a larger single row still runs alone).
    max_wait_s: how long the first row of a batch waits for company.
    on_batch: called with (rows, seconds) after each model call (metrics).
  """

  def __init__(self, run: Callable[[list[Any]], Sequence[Any]], *,
               size_of: Callable[[Any], int], max_rows: int, max_tokens: int,
               max_wait_s: float, on_batch: Callable[[int, float], None] | None = None):
    self._run, self._size_of = run, size_of
    self.max_rows, self.max_tokens, self.max_wait_s = max_rows, max_tokens, max_wait_s
    self._on_batch = on_batch
    self._queue: asyncio.Queue[_Row] | None = None
    self._held: _Row | None = None  # a row that did not fit the last batch
    self._worker: asyncio.Task | None = None
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")

  async def start(self) -> None:
    self._queue = asyncio.Queue()
    self._worker = asyncio.create_task(self._loop())

  async def stop(self) -> None:
    if self._worker is not None:
      self._worker.cancel()
      try:
        await self._worker
      except asyncio.CancelledError:
        pass
    self._pool.shutdown(wait=False, cancel_futures=True)

  async def submit(self, rows: Sequence[Any]) -> list[Any]:
    """The results of `rows`, in order (they may ride in several batches)."""
    loop = asyncio.get_running_loop()
    pending = [_Row(r, self._size_of(r), loop.create_future()) for r in rows]
    for p in pending:
      self._queue.put_nowait(p)
    try:
      return list(await asyncio.gather(*(p.future for p in pending)))
    finally:
      for p in pending:  # a request that gave up leaves its rows unscored
        p.future.cancel()

  async def _next(self, timeout: float | None) -> _Row | None:
    if self._held is not None:
      row, self._held = self._held, None
      return row
    if timeout is None:
      return await self._queue.get()
    try:
      return await asyncio.wait_for(self._queue.get(), max(timeout, 0.0))
    except asyncio.TimeoutError:
      return None

  async def _collect(self) -> list[_Row]:
    first = await self._next(None)
    batch, tokens = [first], first.size
    deadline = time.monotonic() + self.max_wait_s
    while len(batch) < self.max_rows:
      row = await self._next(deadline - time.monotonic())
      if row is None:
        break
      if tokens + row.size > self.max_tokens:
        self._held = row  # it opens the next batch
        break
      batch.append(row)
      tokens += row.size
    return batch

  async def _loop(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      batch = [r for r in await self._collect() if not r.future.done()]
      if not batch:
        continue
      t = time.perf_counter()
      try:
        results = await loop.run_in_executor(self._pool, self._run, [r.row for r in batch])
      except Exception as e:  # noqa: BLE001 -- a failed call fails its requests, not the server.
        log.exception("model call on %d rows failed", len(batch))
        for r in batch:
          if not r.future.done():
            r.future.set_exception(ModelCallFailed(f"model call failed: {type(e).__name__}"))
        continue
      if self._on_batch is not None:
        self._on_batch(len(batch), time.perf_counter() - t)
      for r, result in zip(batch, results):
        if not r.future.done():
          r.future.set_result(result)
