"""Adaptive batching: concurrent requests for one model merged into one backend call.

A small model call costs about the same for 2 rows or 64 (a `LogisticRegression.predict` is
~190 µs either way here), so throughput comes from merging. The batcher keeps one call in
flight; requests that arrive meanwhile queue up and form the next batch (up to
`max_batch_size` rows), so batches grow with load and a lone request waits for nobody unless
`max_latency_us` asks it to wait for company. Each request gets its own rows back; when a merged
call fails, its requests are retried one by one so a bad request fails alone. The queue is
bounded: beyond `max_queue` waiting requests, new ones get 503.

For the statistics extension each request's wait is its `queue` time and its batch's call its
`compute_infer`; the call is one execution of its batch size, counted once for all its requests.
While traces are on, each request has a `batch` span from its arrival in the queue to its
answer (`servers/tracing.py`), saying the rows and requests of the call it joined.

Rows are one array, or several named arrays that share dimension 0 (a TensorFlow signature's
inputs and outputs); either way a batch is their concatenation along dimension 0.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
from opentelemetry.trace import Span

from servers.errors import ModelServeError, NotReady
from servers.statistics import RequestTiming, current_timing
from servers.tracing import start_batch_span

__all__ = ["AdaptiveBatcher", "BatchSettings", "QueueFull", "Rows"]

# One array, or named arrays sharing dimension 0.
Rows: TypeAlias = np.ndarray | Mapping[str, np.ndarray]


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


def _count(rows: Rows) -> int:
    if isinstance(rows, np.ndarray):
        return len(rows)
    return len(next(iter(rows.values()))) if rows else 0


def _concat(parts: list[Rows]) -> Rows:
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)  # type: ignore[arg-type]
    return {name: np.concatenate([p[name] for p in parts]) for name in first}


def _slice(rows: Rows, start: int, stop: int) -> Rows:
    if isinstance(rows, np.ndarray):
        return rows[start:stop]
    return {name: array[start:stop] for name, array in rows.items()}


@dataclass
class _Pending:
    rows: Rows
    future: asyncio.Future[Rows]
    timing: RequestTiming | None
    submitted_ns: int
    span: Span | None = None  # the request's `batch` span, while traces are on


RowFunction = Callable[[Rows], Rows]


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

    async def submit(self, rows: Rows) -> Rows:
        """The result rows for `rows`, computed in some batch."""
        if len(self._queue) >= self.settings.max_queue:
            raise QueueFull(f"{len(self._queue)} requests already wait for the model; retry later")
        future: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
        timing = current_timing()
        if timing is not None:
            timing.batched = True  # its executions are counted here, per batch
        span = start_batch_span(_count(rows))
        self._queue.append(_Pending(rows, future, timing, time.perf_counter_ns(), span))
        self._wakeup.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="adaptive batcher")
        if span is None:
            return await future
        try:
            return await future
        finally:
            span.end()

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
        return sum(_count(p.rows) for p in self._queue)

    def _take(self) -> list[_Pending]:
        batch = [self._queue.popleft()]
        rows = _count(batch[0].rows)
        while self._queue and rows + _count(self._queue[0].rows) <= self.settings.max_batch_size:
            item = self._queue.popleft()
            batch.append(item)
            rows += _count(item.rows)
        return [p for p in batch if not p.future.done()]  # skip cancelled requests

    async def _execute(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        try:
            results = await self._call(_concat([p.rows for p in batch]), batch)
        except Exception as exc:  # noqa: BLE001 - delivered to the waiters, not lost
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            for pending in batch:  # a bad request must fail alone
                try:
                    _settle(pending, await self._call(pending.rows, [pending]))
                except Exception as single:  # noqa: BLE001
                    _settle(pending, single)
            return
        offset = 0
        for pending in batch:
            count = _count(pending.rows)
            _settle(pending, _slice(results, offset, offset + count))
            offset += count

    async def _call(self, rows: Rows, batch: list[_Pending]) -> Rows:
        self.calls += 1
        loop = asyncio.get_running_loop()
        started = time.perf_counter_ns()
        results = await loop.run_in_executor(None, self.fn, rows)
        infer_ns = time.perf_counter_ns() - started
        counted = False
        for pending in batch:
            if pending.span is not None:  # what this request joined (the last call, if retried)
                pending.span.set_attributes(
                    {"modelserve.batch.size": _count(rows), "modelserve.batch.requests": len(batch)}
                )
                pending.span.add_event("executed", {"modelserve.batch.infer_ns": infer_ns})
            timing = pending.timing
            if timing is None:
                continue
            if not counted:  # one execution for the whole batch (its requests share a model)
                timing.statistics.executed(_count(rows), infer_ns)
                counted = True
            timing.add("queue", started - pending.submitted_ns)
            timing.add("compute_infer", infer_ns)
            pending.submitted_ns = time.perf_counter_ns()  # a retry alone waits afresh
        expected = _count(rows)
        lengths = (
            {len(results)}
            if isinstance(results, np.ndarray)
            else {len(a) for a in results.values()}
        )
        if lengths != {expected}:
            raise ModelServeError(f"the model returned {lengths} results for {expected} rows")
        return results


def _settle(pending: _Pending, outcome: Rows | Exception) -> None:
    if pending.future.done():
        return
    if isinstance(outcome, Exception):
        pending.future.set_exception(outcome)
    else:
        pending.future.set_result(outcome)
