"""`CoalescingTransport` over a real loopback connection: the writes of one loop turn leave as
one write of the real transport, in order; `close()` sends what is queued; `abort()` drops it."""

from __future__ import annotations

import asyncio

from gateway.writes import CoalescingTransport


class _Recording:
    """A real transport, with each `write` it gets recorded."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.transport, name)


async def _connected(
    send: list[bytes], end: str
) -> tuple[bytes, list[bytes]]:
    loop = asyncio.get_running_loop()
    made: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Sender(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.set_result(transport)  # type: ignore[arg-type]

    server = await loop.create_server(Sender, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    recording = _Recording(await made)
    wrapped = CoalescingTransport(recording, loop)  # type: ignore[arg-type]
    for chunk in send:
        wrapped.write(chunk)
    if end == "close":
        wrapped.close()
    elif end == "abort":
        wrapped.abort()
    else:
        await asyncio.sleep(0.01)
        wrapped.close()
    received = await reader.read()
    writer.close()
    server.close()
    return received, recording.writes


def test_writes_of_one_turn_leave_as_one() -> None:
    received, writes = asyncio.run(_connected([b"HTTP/1.1 200 OK\r\n\r\n", b"", b"{}"], "turn"))
    assert received == b"HTTP/1.1 200 OK\r\n\r\n{}"
    assert writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]


def test_close_sends_what_is_queued_and_abort_drops_it() -> None:
    received, writes = asyncio.run(_connected([b"head", b"body"], "close"))
    assert (received, writes) == (b"headbody", [b"headbody"])
    received, writes = asyncio.run(_connected([b"head", b"body"], "abort"))
    assert (received, writes) == (b"", [])
