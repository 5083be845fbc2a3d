"""The front door (gateway/frontdoor.py) on a real uvicorn under uvloop, with raw sockets for the
slow clients and httpx for the normal ones.

Timeouts are short so the tests are cheap; a bound such as "closed within 10 s" is generous on
purpose (2 shared cores): it tells a closed connection from one held for good, nothing finer.
Attackers bind 127.0.0.2 or .3 (Linux routes 127.0.0.0/8 to loopback) to count as other
clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
import uvloop
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from gateway.frontdoor import FrontDoor, FrontDoorLimits, client_key, raise_nofile_limit
from gateway.settings import GatewaySettings
from tests.gateway.conftest import SETTINGS, LoopThread, Upstream, running_gateway

T = TypeVar("T")
BOUND = 10.0  # seconds: far above every timeout here, far below "held for good"
LIMITS = FrontDoorLimits(
    header_timeout_s=0.5, body_timeout_s=1.0, keepalive_timeout_s=0.3,
    max_connections=4, max_connections_per_client=3,
)
HEAD = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\n"


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers the body's length once it has all of it; /early starts answering at once."""
    if scope["path"] == "/early":
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"early", "more_body": True})
        await receive()  # until the client goes
        await send({"type": "http.response.body", "body": b""})
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    answer = b"%d" % size
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(answer))]})
    await send({"type": "http.response.body", "body": answer})


def run(coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(asyncio.wait_for(coro(), 60))


@asynccontextmanager
async def serving(limits: FrontDoorLimits = LIMITS) -> AsyncIterator[tuple[int, FrontDoor]]:
    door = FrontDoor(limits, nofile=1 << 20)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(echo, log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1, **door.uvicorn_config_kwargs())
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1], door
    finally:
        server.should_exit = True
        await task


async def connect(port: int, source: str = "127.0.0.1"
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), BOUND):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def status_and_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert b"content-type: application/json" in head.lower()
    return int(head.split()[1]), json.loads(body)["error"]


async def held(door: FrontDoor, count: int) -> None:
    async def reached() -> None:
        while door.stats.open != count:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(reached(), BOUND)


async def trickle(writer: asyncio.StreamWriter, data: bytes, every_s: float = 0.1) -> None:
    """Send `data` a byte at a time, never idle for a whole header timeout, until closed."""
    for byte in data:
        await asyncio.sleep(every_s)
        if writer.is_closing():
            return
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            return


def test_header_trickle_is_cut_at_the_header_timeout_in_total() -> None:
    async def scenario() -> bytes:
        async with serving() as (port, door):
            reader, writer = await connect(port)
            writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n")
            trickling = asyncio.create_task(trickle(writer, b"x-slow: " + b"a" * 1000))
            answer = await until_closed(reader)
            trickling.cancel()
            writer.close()
            assert door.stats.header_timeouts == 1
            await held(door, 0)  # the timed-out connection is uncounted
            return answer

    status, error = status_and_error(run(scenario))
    assert status == 408
    assert "headers" in error


def test_silent_connection_is_closed_at_the_header_timeout() -> None:
    async def scenario() -> bytes:
        async with serving() as (port, _):
            reader, writer = await connect(port)
            answer = await until_closed(reader)
            writer.close()
            return answer

    assert run(scenario) == b""


def test_body_short_of_its_content_length_gets_408() -> None:
    async def scenario() -> bytes:
        async with serving() as (port, door):
            reader, writer = await connect(port)
            writer.write(HEAD + b"abc")
            answer = await until_closed(reader)
            writer.close()
            assert door.stats.body_timeouts == 1
            return answer

    status, error = status_and_error(run(scenario))
    assert status == 408
    assert "body" in error


def test_stalled_body_after_the_answer_started_is_closed_only() -> None:
    async def scenario() -> bytes:
        async with serving() as (port, _):
            reader, writer = await connect(port)
            writer.write(HEAD.replace(b"/echo", b"/early") + b"abc")
            answer = await until_closed(reader)
            writer.close()
            return answer

    answer = run(scenario)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"408" not in answer


def test_slow_steady_body_is_not_cut() -> None:
    """The body timeout is between reads: 10 bytes over ~2 s, a byte each 0.1 s, pass."""

    async def scenario() -> bytes:
        async with serving() as (port, _):
            reader, writer = await connect(port)
            writer.write(HEAD)
            for _ in range(10):
                await asyncio.sleep(0.2)
                writer.write(b"x")
            answer = await asyncio.wait_for(reader.readuntil(b"10"), BOUND)
            writer.close()
            return answer

    assert run(scenario).startswith(b"HTTP/1.1 200 ")


def test_kept_alive_connection_closes_when_idle() -> None:
    async def scenario() -> bytes:
        async with serving() as (port, _):
            reader, writer = await connect(port)
            writer.write(HEAD + b"0123456789")
            answer = await until_closed(reader)
            writer.close()
            return answer

    answer = run(scenario)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1") == 1


def test_trickle_after_a_kept_alive_answer_is_cut_at_the_header_timeout() -> None:
    """uvicorn's keep-alive timer stops at the first byte; the header timeout does not."""

    async def scenario() -> bytes:
        async with serving() as (port, _):
            reader, writer = await connect(port)
            writer.write(HEAD + b"0123456789")
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n10"), BOUND)
            trickling = asyncio.create_task(trickle(writer, b"GET / HTTP/1.1\r\nx: " + b"a" * 1000))
            answer = await until_closed(reader)
            trickling.cancel()
            writer.close()
            return answer

    status, _ = status_and_error(run(scenario))
    assert status == 408


def test_pipelined_requests_are_answered_in_order() -> None:
    async def scenario() -> bytes:
        async with serving() as (port, _):
            reader, writer = await connect(port)
            writer.write(HEAD + b"0123456789" + HEAD.replace(b"10", b"3") + b"abc")
            answer = await until_closed(reader)
            writer.close()
            return answer

    answer = run(scenario)
    assert answer.count(b"HTTP/1.1 200 ") == 2
    assert answer.index(b"\r\n10") < answer.index(b"\r\n3")


async def refused(port: int, source: str) -> bytes:
    """What a new connection from `source` gets: a 503, or a close (a reset included)."""
    reader, writer = await connect(port, source)
    try:
        writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        return await until_closed(reader)
    finally:
        writer.close()


def assert_refused(answer: bytes) -> None:
    assert answer == b"" or status_and_error(answer)[0] == 503


def test_caps_refuse_at_once_and_other_addresses_are_served() -> None:
    # Held for the whole test: the attackers' half headers must not time out meanwhile.
    limits = LIMITS.model_copy(update={"header_timeout_s": 60.0})

    async def scenario() -> None:
        async with serving(limits) as (port, door):
            attackers = [await connect(port, "127.0.0.2") for _ in range(3)]
            for _, writer in attackers:
                writer.write(b"GET / HTTP/1.1\r\n")
            await held(door, 3)
            # Over the per-client cap: refused at once, while 127.0.0.1 is served.
            assert_refused(await asyncio.wait_for(refused(port, "127.0.0.2"), BOUND))
            async with httpx.AsyncClient(timeout=BOUND) as client:
                assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200
            # Over the total cap: everyone new is refused at once.
            attackers.append(await connect(port, "127.0.0.3"))
            await held(door, 4)
            assert_refused(await asyncio.wait_for(refused(port, "127.0.0.1"), BOUND))
            assert door.stats.refused == 2
            for _, writer in attackers:
                writer.close()
            await held(door, 0)
            async with httpx.AsyncClient(timeout=BOUND) as client:
                assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200

    run(scenario)


def test_gateway_rest_listener_has_the_front_door(
    loop_thread: LoopThread, upstreams: tuple[Upstream, Upstream]
) -> None:
    settings = SETTINGS.model_copy(update={"body_timeout_s": 0.5})
    with running_gateway(loop_thread, upstreams, settings) as gateway:
        with socket.create_connection(("127.0.0.1", gateway.server.http_port), BOUND) as sock:
            sock.sendall(HEAD.replace(b"/echo", b"/v1/models/echo:predict") + b"{}")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    status, _ = status_and_error(answer)
    assert status == 408
    assert b"x-modelserve-revision: none" in answer


def test_caps_are_fitted_to_the_open_files_limit(caplog: pytest.LogCaptureFixture) -> None:
    limits = FrontDoorLimits(max_connections=4096, max_connections_per_client=512,
                             fd_reserve=384)
    assert limits.fitted(100_000) == limits
    with caplog.at_level(logging.WARNING, "gateway.frontdoor"):
        fitted = limits.fitted(1024)
    assert (fitted.max_connections, fitted.max_connections_per_client) == (640, 320)
    assert "RLIMIT_NOFILE 1024" in caplog.text
    with pytest.raises(ValueError, match="ulimit"):
        limits.fitted(385)


def test_per_client_cap_must_be_below_the_total() -> None:
    with pytest.raises(ValidationError, match="below max_connections"):
        FrontDoorLimits(max_connections=10, max_connections_per_client=10)
    with pytest.raises(ValidationError, match="below max_connections"):
        GatewaySettings(max_connections=100, max_connections_per_client=200)


def test_gateway_settings_give_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSERVE_GATEWAY_HEADER_TIMEOUT_S", "3")
    monkeypatch.setenv("MODELSERVE_GATEWAY_MAX_CONNECTIONS_PER_CLIENT", "7")
    limits = GatewaySettings(fd_reserve=100, max_connections_per_backend=50).front_door_limits()
    assert limits.header_timeout_s == 3
    assert limits.max_connections_per_client == 7
    assert limits.fd_reserve == 150  # the process's files and one backend pool


def test_clients_are_counted_by_address_and_ipv6_by_64() -> None:
    assert client_key("127.0.0.2") == "127.0.0.2"
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")


def test_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 512:
        pytest.skip(f"the hard limit here is {hard}")
    code = ("import resource\nfrom gateway.frontdoor import raise_nofile_limit\n"
            "print(raise_nofile_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
    ).stdout.split()
    assert out[0] == out[1] != "256"
    assert raise_nofile_limit() >= soft
