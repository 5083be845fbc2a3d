"""Adaptive batching: concurrent requests for one model merged into one backend call.

A small model call costs about the same for 2 rows or 64 (a `LogisticRegression.predict` is
~190 µs either way here), so throughput comes from merging. The batcher keeps one call in
flight; requests that arrive meanwhile queue up and form the next batch (up to
`max_batch_size` rows), so batches grow with load and a lone request waits for nobody unless
`max_latency_us` asks it to wait for company. Each request gets its own rows back; when a merged
call fails, its requests are retried one by one so a bad request fails alone. The queue is
bounded: beyond `max_queue` waiting requests, new ones get 503.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from servers.errors import ModelServeError, NotReady

__all__ = ["AdaptiveBatcher", "BatchSettings", "QueueFull"]


class QueueFull(NotReady):
    """Too many requests are waiting for the model (503, retry later)."""


@dataclass(frozen=True)
class BatchSettings:
    """How a model's requests are merged."""

    max_batch_size: int = 32  # rows in one call; 1 turns batching off
    max_latency_us: int = 0  # how long a batch may wait to fill once the model is free
    max_queue: int = 1024  # requests waiting; more get 503

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_latency_us < 0 or self.max_queue < 1:
            raise ValueError(f"invalid batch settings: {self}")


@dataclass
class _Pending:
    rows: np.ndarray
    future: asyncio.Future[np.ndarray]


RowFunction = Callable[[np.ndarray], np.ndarray]


class AdaptiveBatcher:
    """Runs `fn` (rows in, one result per row out) on merged batches, off the event loop.

    Create it inside the running event loop; `calls` counts backend calls (for tests/metrics).
    """

    def __init__(self, fn: RowFunction, settings: BatchSettings) -> None:
        self.fn = fn
        self.settings = settings
        self.calls = 0
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """The result rows for `rows`, computed in some batch."""
        if len(self._queue) >= self.settings.max_queue:
            raise QueueFull(f"{len(self._queue)} requests already wait for the model; retry later")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(rows, future))
        self._wakeup.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="adaptive batcher")
        return await future

    async def _run(self) -> None:
        while self._queue:
            await self._fill()
            batch = self._take()
            await self._execute(batch)

    async def _fill(self) -> None:
        """Wait up to max_latency_us for the batch to fill (not at all by default)."""
        deadline = time.monotonic() + self.settings.max_latency_us / 1e6
        while self._rows_queued() < self.settings.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _rows_queued(self) -> int:
        return sum(len(p.rows) for p in self._queue)

    def _take(self) -> list[_Pending]:
        batch = [self._queue.popleft()]
        rows = len(batch[0].rows)
        while self._queue and rows + len(self._queue[0].rows) <= self.settings.max_batch_size:
            item = self._queue.popleft()
            batch.append(item)
            rows += len(item.rows)
        return [p for p in batch if not p.future.done()]  # skip cancelled requests

    async def _execute(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        try:
            merged = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch])
            results = await self._call(merged)
        except Exception as exc:  # noqa: BLE001 - delivered to the waiters, not lost
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            for pending in batch:  # a bad request must fail alone
                try:
                    _settle(pending, await self._call(pending.rows))
                except Exception as single:  # noqa: BLE001
                    _settle(pending, single)
            return
        offset = 0
        for pending in batch:
            count = len(pending.rows)
            _settle(pending, results[offset : offset + count])
            offset += count

    async def _call(self, rows: np.ndarray) -> np.ndarray:
        self.calls += 1
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(None, self.fn, rows)
        if len(results) != len(rows):
            raise ModelServeError(f"the model returned {len(results)} results for {len(rows)} rows")
        return results


def _settle(pending: _Pending, outcome: np.ndarray | Exception) -> None:
    if pending.future.done():
        return
    if isinstance(outcome, Exception):
        pending.future.set_exception(outcome)
    else:
        pending.future.set_result(outcome)
