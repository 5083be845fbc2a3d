"""A real gateway (uvicorn + grpc.aio) in front of real upstream servers, all on free ports.

Everything async runs in one background event loop thread; tests talk to it with ordinary
blocking httpx and grpc clients, as users do.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import uvicorn
from grpc import aio
from starlette.types import ASGIApp

from gateway.dataplane.admission import Admission
from gateway.dataplane.server import GatewayServer
from gateway.routing import Backend, RoutingTable, ServiceRoute
from gateway.settings import GatewaySettings
from tests.gateway.upstreams import Hits, echo_app, start_grpc
from tests.support import ServerProcess, free_port

T = TypeVar("T")

# Small limits so the tests reach them cheaply.
SETTINGS = GatewaySettings(
    max_body_bytes=4096, request_timeout_s=0.5, connect_timeout_s=1.0,
    grpc_max_message_bytes=64 * 1024,
)


class LoopThread:
    """An asyncio loop in a daemon thread; `run()` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def start_uvicorn(app: ASGIApp) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, sock.getsockname()[1]


@dataclass
class Upstream:
    tag: str
    http_url: str
    grpc_target: str
    hits: Hits = field(default_factory=Hits)


@dataclass
class Gateway:
    """The running gateway under test and the upstreams behind it."""

    server: GatewayServer
    table: RoutingTable
    a: Upstream
    b: Upstream

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    def sample(self, name: str, protocol: str, code: str) -> float:
        return self.server.metrics.count(service=name, protocol=protocol, code=code)


def build_table(a: Upstream, b: Upstream) -> RoutingTable:
    """The services the tests route to; every name says what it exercises."""
    dead = free_port()  # nothing listens there

    def backend(revision: str, up: Upstream, **kw: Any) -> Backend:
        return Backend(revision, up.http_url, up.grpc_target, **kw)

    table = RoutingTable()
    for route in (
        ServiceRoute("echo", backends=(backend("echo-00001", a),)),
        ServiceRoute("slow", backends=(backend("slow-00001", a),)),
        ServiceRoute("refuse", backends=(backend("refuse-00001", a),)),
        ServiceRoute("split", backends=(backend("split-a", a, percent=100),
                                        backend("split-b", b, percent=0))),
        ServiceRoute("half", backends=(backend("half-a", a, percent=50),
                                       backend("half-b", b, percent=50))),
        ServiceRoute("down", backends=(Backend("down-00001", f"http://127.0.0.1:{dead}",
                                               f"127.0.0.1:{dead}"),)),
        # One revision, two replicas, one of which refuses connections: retried on the other.
        ServiceRoute("halfdown", backends=(
            Backend("halfdown-00001", f"http://127.0.0.1:{dead}", f"127.0.0.1:{dead}"),
            backend("halfdown-00001", a))),
        ServiceRoute("loading", message="revision loading-00001 is pulling its model",
                     backends=(backend("loading-00001", a, ready=False),)),
    ):
        table.update(route)
    return table


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def upstreams(loop_thread: LoopThread) -> Iterator[tuple[Upstream, Upstream]]:
    """Upstreams "a" and "b": a REST echo app and a gRPC servicer each, counting their hits."""
    started: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    grpc_servers: list[aio.Server] = []
    found = []
    for tag in ("a", "b"):
        hits = Hits()
        server, task, port = loop_thread.run(start_uvicorn(echo_app(tag, hits)))
        grpc_server, grpc_port = loop_thread.run(start_grpc(tag, hits))
        started.append((server, task))
        grpc_servers.append(grpc_server)
        found.append(Upstream(tag, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", hits))
    yield found[0], found[1]

    async def stop_all() -> None:
        for grpc_server in grpc_servers:
            await grpc_server.stop(0)
        for server, task in started:
            server.should_exit = True
            await task

    loop_thread.run(stop_all())


@contextmanager
def running_gateway(
    loop_thread: LoopThread,
    upstreams: tuple[Upstream, Upstream],
    settings: GatewaySettings = SETTINGS,
    admission: Admission | None = None,
) -> Iterator[Gateway]:
    """A gateway of its own (fresh table, metrics and admission) in front of `upstreams`."""
    a, b = upstreams
    table = build_table(a, b)
    server = GatewayServer(table, settings, http_port=0, grpc_port=0, admission=admission)
    loop_thread.run(server.start())
    try:
        yield Gateway(server, table, a, b)
    finally:
        loop_thread.run(server.stop(grace=1))


@pytest.fixture(scope="session")
def gateway(loop_thread: LoopThread, upstreams: tuple[Upstream, Upstream]) -> Iterator[Gateway]:
    with running_gateway(loop_thread, upstreams) as running:
        yield running


SKLEARN_REVISION = "sklearn-iris-predictor-00001"


@pytest.fixture(scope="session")
def sklearn_gateway(
    loop_thread: LoopThread, sklearn_server: ServerProcess
) -> Iterator[GatewayServer]:
    """A gateway with one service, sklearn-iris, served by the session's real sklearn server
    (revision `SKLEARN_REVISION`), default settings."""
    table = RoutingTable()
    backend = Backend(SKLEARN_REVISION, sklearn_server.http_url, sklearn_server.grpc_target)
    table.update(ServiceRoute("sklearn-iris", backends=(backend,)))
    server = GatewayServer(table, GatewaySettings(), http_port=0, grpc_port=0)
    loop_thread.run(server.start())
    yield server
    loop_thread.run(server.stop(grace=1))
