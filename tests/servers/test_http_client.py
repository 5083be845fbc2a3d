"""The shared HTTP/1.1 client (`servers.http_client`) on its own: what the gateway's
forwarder tests (tests/gateway/test_proxy.py) do not show, the pools it keeps and the answer
headers it keeps, against raw asyncio servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from servers.http_client import HttpClient

OK = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-other: 1\r\n"
      b"content-length: 2\r\n\r\n{}")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answering(answer: bytes, close: bool = False) -> Handler:
    """A backend that answers every request on a connection with `answer`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answer)
                await writer.drain()
                if close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


def test_pools_of_backends_without_connections_are_dropped() -> None:
    async def run() -> tuple[list[str], list[str]]:
        first = await asyncio.start_server(answering(OK, close=True), "127.0.0.1", 0)
        second = await asyncio.start_server(answering(OK), "127.0.0.1", 0)
        urls = [f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in (first, second)]
        client = HttpClient(0.5, 1.0, 4)
        try:
            await client.request(urls[0], "GET", b"/", [], None)
            await asyncio.sleep(0.05)  # the first backend closes its connection
            await client.request(urls[1], "GET", b"/", [], None)
            return client.backends, urls
        finally:
            await client.aclose()
            first.close()
            second.close()

    pools, urls = asyncio.run(run())
    assert pools == [urls[1]]


def test_only_the_answer_headers_asked_for_are_kept() -> None:
    async def run() -> list[tuple[bytes, bytes]]:
        server = await asyncio.start_server(answering(OK), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        client = HttpClient(0.5, 1.0, 4, keep_headers=(b"x-other",))
        try:
            answer = await client.request(url, "POST", b"/v2/models/m/infer", [], b"{}")
            assert (answer.status, answer.content) == (200, b"{}")
            return answer.headers
        finally:
            await client.aclose()
            server.close()

    assert asyncio.run(run()) == [(b"x-other", b"1")]
