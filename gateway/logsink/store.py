"""Where the sink puts events: the JSON-lines file (all of them) and a short memory (the last
few per InferenceService, for `/events` and the dashboard).

The memory is bounded three ways, so no sender can grow it: events per service, services
(the least recently heard one goes), and bytes over all (the oldest event goes). An event
whose line is over `max_event_bytes` is kept without its data (`data_omitted_bytes`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import FileIO
from pathlib import Path

from gateway.logsink.events import LoggedEvent

__all__ = ["JsonLinesFile", "RecentEvents"]


@dataclass(frozen=True, slots=True)
class _Kept:
    seq: int
    line: bytes


class RecentEvents:
    """The last `per_service` events of each of at most `max_services` services, at most
    `max_bytes` of lines in all. Services are keyed by the `inferenceservicename` extension
    ("" for events without one). Used from one event loop: no locking."""

    def __init__(
        self, per_service: int, max_services: int, max_bytes: int, max_event_bytes: int
    ) -> None:
        if min(per_service, max_services, max_bytes, max_event_bytes) <= 0:
            raise ValueError("every bound of the recent events must be positive")
        self.per_service = per_service
        self.max_services = max_services
        self.max_bytes = max_bytes
        self.max_event_bytes = min(max_event_bytes, max_bytes)
        self._services: dict[str, deque[_Kept]] = {}
        self._bytes = 0
        self._seq = 0

    @property
    def kept_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return sum(len(kept) for kept in self._services.values())

    def add(self, event: LoggedEvent, line: bytes) -> None:
        """Remember `event` (whose file line is `line`), forgetting what the bounds ask."""
        if len(line) > self.max_event_bytes:
            line = event.without_data().line()
        name = event.extension("inferenceservicename")
        key = str(name) if name is not None else ""
        kept = self._services.get(key)
        if kept is None:
            if len(self._services) >= self.max_services:
                self._forget_service()
            kept = self._services[key] = deque()
        self._seq += 1
        kept.append(_Kept(self._seq, line))
        self._bytes += len(line)
        if len(kept) > self.per_service:
            self._bytes -= len(kept.popleft().line)
        while self._bytes > self.max_bytes:
            self._forget_oldest()

    def lines(self, service: str | None, limit: int) -> list[bytes]:
        """Up to `limit` kept lines, newest first: of one service, or of all when None."""
        if service is not None:
            kept = self._services.get(service, ())
            return [k.line for k in list(reversed(kept))[:limit]]
        every = [k for kept in self._services.values() for k in kept]
        every.sort(key=lambda k: k.seq, reverse=True)
        return [k.line for k in every[:limit]]

    def _forget_service(self) -> None:
        # The service heard from least recently: the one whose newest event is oldest.
        key = min(self._services, key=lambda s: self._services[s][-1].seq)
        self._bytes -= sum(len(k.line) for k in self._services.pop(key))

    def _forget_oldest(self) -> None:
        key = min(self._services, key=lambda s: self._services[s][0].seq)
        kept = self._services[key]
        self._bytes -= len(kept.popleft().line)
        if not kept:
            del self._services[key]


class JsonLinesFile:
    """An append-only file of one JSON line per event, written by one worker thread (lines
    keep the order they were given in; the event loop never waits on the disk) with no buffer
    of its own, so a reader (`tail -f`) sees every event once `append` returns, and a failed
    write is not written again with the next line (its sender was told 500 and retries)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: FileIO = path.open("ab", buffering=0)  # fails here, at start-up, if it cannot
        self._partial = False  # a failed write left part of a line: end it before the next
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="logsink-writer")

    def _write(self, line: bytes) -> None:
        data = memoryview((b"\n" if self._partial else b"") + line + b"\n")
        written = 0
        try:
            while written < len(data):
                written += self._file.write(data[written:])
        except OSError:
            self._partial = self._partial or written > 0
            raise
        self._partial = False

    async def append(self, line: bytes) -> None:
        """Append `line` (no newline in it); OSError if the disk refuses."""
        await asyncio.get_running_loop().run_in_executor(self._writer, self._write, line)

    def close(self) -> None:
        """Write what is queued, then close the file."""
        self._writer.shutdown(wait=True)
        self._file.close()
