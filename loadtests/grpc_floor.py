"""The least a Python gRPC proxy costs: a bare `grpc.aio` byte proxy, as a benchmark's peer.

    .venv/bin/python -m loadtests.grpc_floor --port 50062 --target 127.0.0.1:8001

Every v2 `inference.GRPCInferenceService` unary call is forwarded, bytes unchanged (no
(de)serializers), to one `--target` over one channel, with the client's metadata less gRPC's
own, and answered with one initial-metadata entry first, as the gateway does
(`x-modelserve-revision`); a backend's error status passes through. No routing, admission,
metrics, retries or request ids: what is left is the grpc.aio server and client themselves,
on uvloop as the gateway runs. The gateway's CPU per gRPC request above this process's, in
the same run (`bench_perf_analyzer.py --floor`), is what the gateway's own work costs; this
process's is what no Python gateway on grpc.aio can go below. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

import grpc
import uvloop
from grpc import aio

__all__ = ["METHODS", "serve"]

SERVICE = "inference.GRPCInferenceService"
# The unary calls Triton's clients and perf_analyzer make.
METHODS = ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata",
           "ModelConfig", "ModelStatistics", "ModelInfer")
_DROPPED = ("user-agent", "grpc-", ":")
_REVISION = (("x-modelserve-revision", "floor"),)


def _forwarder(
    channel: aio.Channel, method: str
) -> Callable[[bytes, aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]:
    call = channel.unary_unary(f"/{SERVICE}/{method}")

    async def forward(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.send_initial_metadata(_REVISION)
        metadata = tuple(
            (k, v) for k, v in context.invocation_metadata() or () if not k.startswith(_DROPPED)
        )
        try:
            answer: bytes = await call(request, timeout=60, metadata=metadata)
        except aio.AioRpcError as exc:  # the backend's status, passed on
            await context.abort(exc.code(), exc.details() or "")
        return answer

    return forward


async def serve(port: int, target: str) -> None:
    """Proxy `127.0.0.1:port` to `target` until cancelled."""
    channel = aio.insecure_channel(target)
    server = aio.server()
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(_forwarder(channel, method))
        for method in METHODS
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(0)
        await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port of the gRPC server behind")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.port, args.target))


if __name__ == "__main__":
    main()
