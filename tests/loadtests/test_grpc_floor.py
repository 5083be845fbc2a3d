"""The benchmarks' floor proxy (loadtests/grpc_floor.py) between a real grpc.aio client and a
real grpc.aio server: bytes and the client's metadata reach the server unchanged, the answer
comes back with the one initial-metadata entry the gateway also sends, and a backend's error
status passes through."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from grpc import aio

from loadtests.grpc_floor import SERVICE, serve
from tests.support import free_port


async def _through_floor() -> tuple[bytes, tuple[tuple[str, str | bytes], ...], list[str],
                                    grpc.StatusCode, str]:
    seen: list[str] = []

    async def infer(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        seen.extend(f"{k}={v!s}" for k, v in context.invocation_metadata() or ()
                    if k == "x-tenant")
        return request[::-1]

    async def metadata(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such model")
        raise AssertionError("unreachable")

    backend = aio.server()
    backend.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(infer),
        "ModelMetadata": grpc.unary_unary_rpc_method_handler(metadata),
    }),))
    backend_port = backend.add_insecure_port("127.0.0.1:0")
    await backend.start()
    port = free_port()
    floor = asyncio.create_task(serve(port, f"127.0.0.1:{backend_port}"))
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 10)
            call = channel.unary_unary(f"/{SERVICE}/ModelInfer")(
                b"\x0a\x04iris tensor bytes", metadata=(("x-tenant", "a"),), timeout=10
            )
            answer = await call
            initial = tuple(await call.initial_metadata())
            with pytest.raises(aio.AioRpcError) as failed:
                await channel.unary_unary(f"/{SERVICE}/ModelMetadata")(b"\x0a\x01x", timeout=10)
    finally:
        floor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await floor
        await backend.stop(0)
    return answer, initial, seen, failed.value.code(), failed.value.details() or ""


def test_floor_proxy_forwards_bytes_metadata_and_errors() -> None:
    answer, initial, seen, code, details = asyncio.run(_through_floor())
    assert answer == b"\x0a\x04iris tensor bytes"[::-1]
    assert ("x-modelserve-revision", "floor") in initial
    assert seen == ["x-tenant=a"]
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "no such model")
