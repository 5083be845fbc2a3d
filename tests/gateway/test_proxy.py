"""The gateway's HTTP/1.1 forwarder against raw asyncio servers that answer byte for byte:
framing (length, chunked, until close, HEAD, 100 Continue), keep-alive reuse, the per-backend
connection limit, the one retry of a kept-alive socket the backend closed, and the mapping of
failures to 503 / 504."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.dataplane.proxy import HttpForwarder, UpstreamResponse
from gateway.settings import GatewaySettings
from servers.errors import BackendTimeout, BackendUnavailable
from tests.support import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
SETTINGS = GatewaySettings(request_timeout_s=0.5, connect_timeout_s=1.0)
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (by content-length) as the backend received them."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length) if length else b""


async def with_backend(
    handler: Handler,
    use: Callable[[HttpForwarder, str], Awaitable[object]],
    settings: GatewaySettings = SETTINGS,
) -> object:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    forwarder = HttpForwarder(settings)
    try:
        return await use(forwarder, url)
    finally:
        await forwarder.aclose()
        server.close()


def answering(*answers: bytes, seen: list[bytes] | None = None, close: bool = False) -> Handler:
    """A backend that answers the requests on each connection with `answers`, in turn."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for answer in answers:
                head, body = await read_request(reader)
                if seen is not None:
                    seen.append(head + body)
                writer.write(answer)
                await writer.drain()
            if close:
                writer.close()
            else:
                await reader.read()  # keep the connection until the client closes it
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handler


def forward_once(
    method: str = "POST", target: bytes = b"/v2/models/m/infer", body: bytes | None = b"{}",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Callable[[HttpForwarder, str], Awaitable[UpstreamResponse]]:
    async def use(forwarder: HttpForwarder, url: str) -> UpstreamResponse:
        return await forwarder.forward(url, method, target, headers or [], body)

    return use


def test_sends_one_request_with_host_headers_and_length() -> None:
    seen: list[bytes] = []
    headers = [(b"content-type", b"application/json"), (b"x-request-id", b"r-1")]
    response = asyncio.run(with_backend(answering(OK, seen=seen),
                                        forward_once(target=b"/v1/models/m:predict?x=%2F",
                                                     body=b'{"a": 1}', headers=headers)))
    assert isinstance(response, UpstreamResponse)
    assert (response.status, response.content) == (200, b"{}")
    assert response.headers == [(b"content-type", b"application/json")]
    port = seen[0].split(b"host: 127.0.0.1:", 1)[1].split(b"\r\n", 1)[0]
    assert seen == [
        b"POST /v1/models/m:predict?x=%2F HTTP/1.1\r\nhost: 127.0.0.1:" + port + b"\r\n"
        b"content-type: application/json\r\nx-request-id: r-1\r\ncontent-length: 8\r\n\r\n"
        b'{"a": 1}'
    ]


def test_empty_body_is_sent_with_length_zero_and_get_without() -> None:
    seen: list[bytes] = []

    async def use(forwarder: HttpForwarder, url: str) -> None:
        await forwarder.forward(url, "POST", b"/a", [], b"")
        await forwarder.forward(url, "GET", b"/b", [], None)

    asyncio.run(with_backend(answering(OK, OK, seen=seen), use))
    assert b"content-length: 0\r\n" in seen[0]
    assert b"content-length" not in seen[1]


def test_chunked_answer_is_joined_and_only_client_headers_kept() -> None:
    chunked = (b"HTTP/1.1 418 I'm a teapot\r\nTransfer-Encoding: chunked\r\nX-Internal: 1\r\n"
               b"Inference-Header-Content-Length: 3\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    response = asyncio.run(with_backend(answering(chunked), forward_once()))
    assert isinstance(response, UpstreamResponse)
    assert (response.status, response.content) == (418, b"abcde")
    assert response.headers == [(b"inference-header-content-length", b"3")]


def test_answer_without_length_ends_at_close() -> None:
    answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"
    response = asyncio.run(with_backend(answering(answer, close=True), forward_once()))
    assert isinstance(response, UpstreamResponse)
    assert response.content == b"all of it"


def test_interim_100_continue_is_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    response = asyncio.run(with_backend(answering(answer), forward_once()))
    assert isinstance(response, UpstreamResponse)
    assert (response.status, response.content) == (200, b"{}")


def test_head_answer_has_no_body_whatever_its_length_says() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"
    response = asyncio.run(with_backend(answering(answer, OK),
                                        forward_once("HEAD", b"/v2/models/m", None)))
    assert isinstance(response, UpstreamResponse)
    assert (response.status, response.content) == (200, b"")


def test_kept_alive_connection_is_reused() -> None:
    connections = 0
    inner = answering(OK, OK, OK)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await inner(reader, writer)

    async def use(forwarder: HttpForwarder, url: str) -> list[int]:
        return [(await forwarder.forward(url, "POST", b"/", [], b"{}")).status for _ in range(3)]

    assert asyncio.run(with_backend(handler, use)) == [200, 200, 200]
    assert connections == 1


def test_connections_per_backend_are_capped() -> None:
    open_now = most = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            while True:
                await read_request(reader)
                await asyncio.sleep(0.02)
                writer.write(OK)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            open_now -= 1
            writer.close()

    async def use(forwarder: HttpForwarder, url: str) -> list[int]:
        calls = [forwarder.forward(url, "POST", b"/", [], b"{}") for _ in range(10)]
        return [r.status for r in await asyncio.gather(*calls)]

    settings = GatewaySettings(request_timeout_s=5.0, max_connections_per_backend=2)
    assert asyncio.run(with_backend(handler, use, settings)) == [200] * 10
    assert most == 2


def test_kept_alive_socket_closed_by_backend_is_retried_once_on_a_fresh_one() -> None:
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The first connection answers once, then drops the next request unanswered (the
        # race with a backend closing an idle kept-alive socket); later ones answer.
        nonlocal requests
        try:
            while True:
                await read_request(reader)
                requests += 1
                if requests == 2:
                    return
                writer.write(OK)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def use(forwarder: HttpForwarder, url: str) -> list[int]:
        return [(await forwarder.forward(url, "POST", b"/", [], b"{}")).status for _ in range(2)]

    assert asyncio.run(with_backend(handler, use)) == [200, 200]
    assert requests == 3


def test_backend_that_never_answers_is_504() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    with pytest.raises(BackendTimeout, match="did not answer within 0.5 s"):
        asyncio.run(with_backend(handler, forward_once()))


def test_refused_connection_is_503() -> None:
    async def use() -> None:
        forwarder = HttpForwarder(SETTINGS)
        try:
            await forwarder.forward(f"http://127.0.0.1:{free_port()}", "GET", b"/", [], None)
        finally:
            await forwarder.aclose()

    with pytest.raises(BackendUnavailable, match="unavailable"):
        asyncio.run(use())


@pytest.mark.parametrize("answer", [b"not http at all\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-"
                                    b"length: 10\r\n\r\nshort"])
def test_garbage_or_cut_answer_is_503(answer: bytes) -> None:
    with pytest.raises(BackendUnavailable, match="unavailable"):
        asyncio.run(with_backend(answering(answer, close=True), forward_once()))
