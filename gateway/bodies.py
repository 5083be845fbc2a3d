"""Reading a request body within a limit, for both doors' ASGI apps.

Never past the limit: a declared `Content-Length` over it is refused before a byte is read,
a streamed (chunked) body as soon as it crosses it, so a huge body costs the gateway at most
the limit in memory.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from servers.errors import PayloadTooLarge

__all__ = ["read_body"]


async def read_body(
    receive: Receive, declared: int | None, limit: int, owner: str = "the"
) -> bytes:
    """The request body; PayloadTooLarge naming `owner`'s limit ("the control plane's") when
    the declared or streamed size is over `limit`; ClientDisconnect when the client goes."""
    too_large = f"request body exceeds {owner} limit of {limit} bytes"
    if declared is not None and declared > limit:
        raise PayloadTooLarge(too_large)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(too_large)
            chunks.append(chunk)
        if not message.get("more_body", False):
            # One chunk (the usual case) is returned as it is: join copies nothing then.
            return b"".join(chunks)
