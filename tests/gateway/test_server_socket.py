"""The gateway's listening socket gives accepted connections TCP_NODELAY.

Without it, a response written as headers then body waits for the client's delayed ACK on
kept-alive connections (~40 ms a request, measured with loadtests/bench_sklearn.py).
"""

from __future__ import annotations

import asyncio
import socket

from gateway.listener import bind_socket


def test_accepted_connections_have_tcp_nodelay() -> None:
    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        sock = bind_socket("127.0.0.1", 0)
        server = await asyncio.start_server(handler, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname())
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) == 1


def test_taken_port_fails_at_bind() -> None:
    first = bind_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        try:
            bind_socket("127.0.0.1", port).close()
        except OSError:
            return
        raise AssertionError("binding a taken port should fail")
    finally:
        first.close()
