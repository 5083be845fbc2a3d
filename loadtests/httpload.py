"""A small closed-loop HTTP/1.1 load generator (keep-alive connections, one request in flight
per connection), light enough that on a 2-core machine the server, not the client, is measured.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

__all__ = ["LoadResult", "run_load"]


@dataclass
class LoadResult:
    """What one load run measured."""

    connections: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    completed: int = 0  # every answered request, the warm-up's too (CPU per request)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, int(q / 100 * len(ordered)))
        return ordered[index] * 1000


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _connection(
    host: str, port: int, request: bytes, stop_at: float, measure_from: float, result: LoadResult
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                return
            writer.write(request)
            status, _ = await _read_response(reader)
            end = time.perf_counter()
            result.completed += 1
            if start >= measure_from:
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == 200:
                    result.latencies.append(end - start)
                else:
                    result.errors += 1
    finally:
        writer.close()


async def run_load(
    host: str,
    port: int,
    path: str,
    body: bytes,
    connections: int,
    seconds: float,
    warmup: float = 1.0,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Keep `connections` requests in flight for `warmup + seconds`; measure the last part."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body
    now = time.perf_counter()
    result = LoadResult(connections=connections, seconds=seconds)
    await asyncio.gather(
        *(
            _connection(host, port, request, now + warmup + seconds, now + warmup, result)
            for _ in range(connections)
        )
    )
    return result
