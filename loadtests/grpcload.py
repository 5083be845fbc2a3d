"""A small closed-loop gRPC load generator (grpc.aio), the counterpart of httpload.py: one call
in flight per connection, each connection its own channel and TCP connection, requests and
responses as raw message bytes (serialized once, never parsed), so the server is measured, not
the client's protobuf code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc
from grpc import aio

from loadtests.httpload import LoadResult

__all__ = ["call_once", "run_grpc_load"]

Metadata = Sequence[tuple[str, str]]
# Each channel gets its own subchannel (TCP connection): grpc shares them between channels to
# the same target by default, which would put every "connection" on one socket.
_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
_OK = grpc.StatusCode.OK.value[0]


async def call_once(
    target: str, method: str, request: bytes, timeout: float = 30.0, metadata: Metadata = ()
) -> bytes:
    """One unary call with raw bytes; raises grpc.aio.AioRpcError on a non-OK status."""
    async with aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        response: bytes = await call(request, timeout=timeout, metadata=tuple(metadata))
        return response


async def _connection(
    target: str,
    method: str,
    request: bytes,
    stop_at: float,
    measure_from: float,
    result: LoadResult,
    timeout: float,
    metadata: tuple[tuple[str, str], ...],
) -> None:
    async with aio.insecure_channel(target, options=_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout)
        call = channel.unary_unary(method)
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                return
            try:
                await call(request, timeout=timeout, metadata=metadata)
                code = _OK
            except aio.AioRpcError as exc:
                code = exc.code().value[0]
            end = time.perf_counter()
            result.completed += 1
            if start >= measure_from:
                result.statuses[code] = result.statuses.get(code, 0) + 1
                if code == _OK:
                    result.latencies.append(end - start)
                else:
                    result.errors += 1


async def run_grpc_load(
    target: str,
    method: str,
    request: bytes,
    connections: int,
    seconds: float,
    warmup: float = 1.0,
    timeout: float = 30.0,
    metadata: Metadata = (),
) -> LoadResult:
    """Keep `connections` calls of `method` in flight for `warmup + seconds`; measure the last
    part. `statuses` counts gRPC status codes (0 is OK)."""
    now = time.perf_counter()
    result = LoadResult(connections=connections, seconds=seconds)
    await asyncio.gather(
        *(
            _connection(target, method, request, now + warmup + seconds, now + warmup, result,
                        timeout, tuple(metadata))
            for _ in range(connections)
        )
    )
    return result
